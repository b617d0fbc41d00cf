"""Numeric tests of saol_core.data: digits generator, device/stream loaders, layouts, caches, errors."""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from saol_core.config import ConfigError, DataConfig
from saol_core.data import DataBundle, DatasetError, build_data
from saol_core.data import files as files_module
from saol_core.data.common import rank_positions
from saol_core.data.digits import make_digits, source_digits, source_split
from saol_core.data.layouts import FileSplit, Layout, hold_out
from saol_core.data.resident import DeviceLoader
from saol_core.data.stream import TrainTransform

from real_data import REAL_DATA, needs

def collect(loader, epoch, start=0):
    xs, ys, idx = zip(*loader.epoch(epoch, start))
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


def save_images(root: Path, images: dict[str, np.ndarray], fmt: str = "PNG") -> None:
    for rel, arr in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / rel, format=fmt)


def rand_image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- digits

def test_digits_deterministic_per_seed():
    a = make_digits(300, split="train", seed=0)
    b = make_digits(300, split="train", seed=0)
    c = make_digits(300, split="train", seed=1)
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.boxes, b.boxes)
    assert np.mean(a.images != c.images) > 0.5 and not np.array_equal(a.labels, c.labels)
    d = make_digits(300, split="test", seed=0)  # same seed, other split: other canvases
    assert np.mean(a.images != d.images) > 0.5


def test_digits_sources_disjoint_and_labels_consistent():
    train_ids, test_ids = source_split()
    _, labels = source_digits()
    assert len(np.intersect1d(train_ids, test_ids)) == 0
    assert np.array_equal(np.union1d(train_ids, test_ids), np.arange(len(labels)))
    frac = np.bincount(labels[test_ids], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(frac - 0.2) < 0.01)  # stratified
    tr = make_digits(500, split="train", seed=3)
    te = make_digits(500, split="test", seed=3)
    assert np.isin(tr.sources, train_ids).all() and np.isin(te.sources, test_ids).all()
    assert np.array_equal(tr.labels, labels[tr.sources]) and np.array_equal(te.labels, labels[te.sources])
    counts = np.bincount(tr.labels, minlength=10)
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("scale", [(0.3, 0.5), (0.6, 0.9)])
def test_digit_boxes_enclose_exactly_the_ink(scale):
    S = 40
    clean = make_digits(400, split="test", seed=5, image_size=S, clutter=0, digit_scale=scale, noise=0, tint=False)
    ink = clean.images.max(axis=-1) > 0  # white ink on black, no noise: ink pixels are the nonzero ones
    ys, xs = ink.any(2), ink.any(1)
    expect = np.stack([xs.argmax(1), ys.argmax(1), S - 1 - xs[:, ::-1].argmax(1), S - 1 - ys[:, ::-1].argmax(1)], 1)
    assert np.array_equal(clean.boxes, expect.astype(np.float32))
    assert (clean.boxes >= 0).all() and (clean.boxes <= S - 1).all()
    side = np.maximum(clean.boxes[:, 2] - clean.boxes[:, 0], clean.boxes[:, 3] - clean.boxes[:, 1]) + 1
    assert side.min() >= 0.5 * scale[0] * S and side.max() <= round(scale[1] * S)
    # Clutter only adds ink (max composition) and leaves the digit and its box unchanged.
    cluttered = make_digits(400, split="test", seed=5, image_size=S, clutter=4, digit_scale=scale, noise=0, tint=False)
    assert np.array_equal(cluttered.boxes, clean.boxes)
    assert (cluttered.images >= clean.images).all() and (cluttered.images > clean.images).any()
    colored = make_digits(400, split="test", seed=5, image_size=S, digit_scale=scale)
    assert np.array_equal(colored.boxes, clean.boxes) and np.array_equal(colored.labels, clean.labels)


# ---------------------------------------------------------------- device-resident loader

def device_loader(n=50, size=8, pad=2, flip=True, train=True, seed=0, batch_size=8, rank=0, world_size=1):
    images = torch.from_numpy(np.random.default_rng(0).integers(1, 256, (n, size, size + 2, 3), dtype=np.uint8))
    return DeviceLoader(images, torch.arange(n) % 7, batch_size=batch_size, mean=(0.4, 0.5, 0.6),
                        std=(0.2, 0.25, 0.3), seed=seed, train=train, pad=pad, flip=flip,
                        rank=rank, world_size=world_size)


def test_device_loader_deterministic_per_seed_and_epoch():
    a, b = device_loader(), device_loader()
    list(a.epoch(0))  # running earlier epochs must not change a later one
    for x, y in zip(collect(a, 3), collect(b, 3)):
        assert torch.equal(x, y)
    assert not torch.equal(collect(a, 3)[2], collect(a, 4)[2])
    assert not torch.equal(collect(a, 3)[2], collect(device_loader(seed=1), 3)[2])
    bs = a.batch_size   # a resume inside an epoch: batches from 2 on equal the whole epoch's from 2 on
    assert all(torch.equal(u[2 * bs:], v) for u, v in zip(collect(a, 3), collect(b, 3, start=2)))


def test_device_loader_visits_each_index_once():
    train, test = device_loader(), device_loader(train=False)
    assert len(train) == 50 // 8 and len(test) == 7
    x, y, idx = collect(train, 0)
    assert len(idx) == 48 and len(idx.unique()) == 48
    assert torch.equal(y, train.labels[idx])
    x, y, idx = collect(test, 0)
    assert torch.equal(idx, torch.arange(50)) and x.shape == (50, 3, 8, 10)


def test_device_loader_crop_flip_match_reference():
    loader = device_loader(pad=3)
    plan = loader.plan(2)
    x, _, idx = collect(loader, 2)
    assert torch.equal(idx, plan.order[: len(idx)])
    assert plan.flip.any() and (~plan.flip).any() and (plan.dy != 3).any()
    mean, std = torch.tensor([0.4, 0.5, 0.6])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    for p in range(12):
        img = loader.images[plan.order[p]].permute(2, 0, 1)  # (C,H,W) uint8
        padded = F.pad(img, (3, 3, 3, 3))  # zero padding
        ref = padded[:, plan.dy[p]: plan.dy[p] + 8, plan.dx[p]: plan.dx[p] + 10]
        if plan.flip[p]:
            ref = ref.flip(-1)
        torch.testing.assert_close(x[p], (ref / 255.0 - mean) / std, rtol=0, atol=1e-5)


def test_ddp_shards_disjoint_covering_and_same_augmentation():
    single = collect(device_loader(batch_size=4), 1)
    shards = [collect(device_loader(batch_size=4, rank=r, world_size=3), 1) for r in range(3)]
    idx = [s[2] for s in shards]
    assert all(len(i) == (50 // 3) // 4 * 4 for i in idx)  # same number of full batches per rank
    allidx = torch.cat(idx)
    assert len(allidx.unique()) == len(allidx)
    # Rank r holds positions r::3 of the global order, with the same crops/flips as one process.
    plan = device_loader(batch_size=4).plan(1)
    for r, (x, _, i) in enumerate(shards):
        assert torch.equal(i, plan.order[r::3][: len(i)])
        single_pos = {int(v): k for k, v in enumerate(single[2])}
        for k in range(len(i)):
            if int(i[k]) in single_pos:
                assert torch.equal(x[k], single[0][single_pos[int(i[k])]])
    # Test shards: disjoint and covering.
    test_idx = torch.cat([collect(device_loader(train=False, rank=r, world_size=3), 0)[2] for r in range(3)])
    assert torch.equal(test_idx.sort().values, torch.arange(50))
    for n, bs, ws in [(10, 3, 4), (7, 2, 2), (100, 7, 3)]:
        pos = torch.cat([rank_positions(n, bs, r, ws, False) for r in range(ws)])
        assert torch.equal(pos.sort().values, torch.arange(n))


def test_digits_bundle_denormalize_round_trip():
    cfg = DataConfig(train_size=120, test_size=40, image_size=24)
    b = build_data(cfg, seed=0, batch_size=16, eval_batch_size=15)
    assert isinstance(b, DataBundle) and b.num_classes == 10 and b.class_names[3] == "3"
    assert len(b.train) == 120 // 16 and len(b.test) == 3 and b.test.train is False
    x, y, idx = collect(b.test, 0)
    raw = b.test.images[idx].permute(0, 3, 1, 2) / 255.0
    torch.testing.assert_close(b.denormalize(x), raw, rtol=0, atol=1e-6)
    # Mean/std are the train split's exact per-channel statistics.
    train_raw = b.train.images.double() / 255
    torch.testing.assert_close(torch.tensor(b.mean), train_raw.mean((0, 1, 2)).float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(b.std), train_raw.std((0, 1, 2), unbiased=False).float(), rtol=0, atol=1e-6)
    assert len(b.test_boxes) == 40 and all(bx.shape == (1, 4) for bx in b.test_boxes.at(24))
    again = build_data(cfg, seed=0, batch_size=16)
    assert torch.equal(again.train.images, b.train.images)
    xt, _, _ = next(iter(b.train.epoch(0)))
    assert (b.denormalize(xt) == 0).all(1).any()  # zero padding of the random crop shows as black


# ---------------------------------------------------------------- folders and archives

@pytest.fixture
def small_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = {f"{split}/{cls}/{k}.png": rand_image(rng, 16, 16)
              for split, n in (("train", 5), ("test", 3)) for cls in ("cat", "ant") for k in range(n)}
    save_images(tmp_path / "ds", images)
    return tmp_path / "ds", images


def test_folder_resident_exact_pixels_and_archive_unpacked_once(small_folder, tmp_path, monkeypatch):
    root, images = small_folder
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
    b = build_data(cfg, seed=0, batch_size=4)
    assert b.class_names == ["ant", "cat"] and b.train.size == 10 and b.test.size == 6 and b.test_boxes is None
    x, y, idx = collect(b.test, 0)
    expect = np.stack([images[f"test/{['ant', 'cat'][k // 3]}/{k % 3}.png"] for k in range(6)])
    assert torch.equal(y, torch.tensor([0, 0, 0, 1, 1, 1]))
    got = (b.denormalize(x) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, expect)

    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="ds")
    cfg_tar = DataConfig(dataset="folder", root=str(archive), image_size=16, cache_dir=str(tmp_path / "cache2"))
    first = build_data(cfg_tar, seed=0, batch_size=4)
    assert torch.equal(first.test.images, b.test.images) and torch.equal(first.train.labels, b.train.labels)

    def fail(*args, **kwargs):
        raise AssertionError("must not run again")
    monkeypatch.setattr(files_module.tarfile, "open", fail)
    monkeypatch.setattr(files_module, "decode_all", fail)
    second = build_data(cfg_tar, seed=0, batch_size=4)  # no re-extraction, no re-decoding
    assert torch.equal(second.train.images, first.train.images)
    assert len(list((tmp_path / "cache2" / "unpacked").iterdir())) == 1  # no stray temp folders


def test_stream_loader_eval_center_crop_and_deterministic_train(tmp_path):
    rng = np.random.default_rng(1)
    images = {f"{split}/{cls}/{k}.png": rand_image(rng, 70 + 9 * k, 90 - 5 * k)
              for split, n in (("train", 6), ("val", 2)) for cls in ("a", "b") for k in range(n)}
    save_images(tmp_path / "big", images)
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "big"), image_size=32, workers=0,
                     cache_dir=str(tmp_path / "cache"))
    b = build_data(cfg, seed=0, batch_size=4)
    assert type(b.train).__name__ == "StreamLoader" and b.mean == (0.485, 0.456, 0.406)
    x, y, idx = collect(b.test, 0)
    assert torch.equal(idx, torch.arange(4)) and torch.equal(y, torch.tensor([0, 0, 1, 1]))
    for k, rel in enumerate(["val/a/0.png", "val/a/1.png", "val/b/0.png", "val/b/1.png"]):
        img = torch.from_numpy(images[rel]).permute(2, 0, 1)
        ref = TF.center_crop(TF.resize(img, 37, antialias=True), [32, 32])  # torchvision Resize(256)+CenterCrop(224)
        got = (b.denormalize(x[k:k + 1])[0] * 255).round()
        assert (got - ref.float()).abs().max() <= 1
    e3 = collect(b.train, 3)
    assert all(torch.equal(u, v) for u, v in zip(e3, collect(build_data(cfg, seed=0, batch_size=4).train, 3)))
    assert not torch.equal(e3[0], collect(b.train, 4)[0])
    assert len(e3[2].unique()) == 12
    workers = build_data(DataConfig(**{**cfg.__dict__, "workers": 2}), seed=0, batch_size=4)
    assert all(torch.equal(u, v) for u, v in zip(e3, collect(workers.train, 3)))  # independent of workers
    later = collect(workers.train, 3, start=1)   # a resume inside the epoch: the same batches from there on
    assert all(torch.equal(u[4:], v) for u, v in zip(e3, later)) and len(later[2]) == 8
    assert all(torch.equal(u, v) for u, v in zip(e3, collect(workers.train, 3)))  # and the next pass is whole again


def test_random_resized_crop_params_in_range():
    g = torch.Generator().manual_seed(0)
    params = np.array([TrainTransform.crop_params(60, 80, g) for _ in range(2000)])
    top, left, h, w = params.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 60).all() and (left + w <= 80).all()
    area, aspect = h * w / (60 * 80), w / h
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1 and aspect.min() >= 0.7 and aspect.max() <= 1.4
    assert area.min() < 0.15 and area.max() > 0.8 and (left > 0).any() and (top > 0).any()
    # No 10 attempts can fit (area >= 0.08 * 1600): fallback to a central crop with the ratio clamped.
    assert TrainTransform.crop_params(4, 400, g) == (0, 197, 4, 5)
    assert TrainTransform.crop_params(400, 4, g) == (197, 0, 5, 4)
    assert torch.equal(torch.tensor(TrainTransform.crop_params(50, 50, torch.Generator().manual_seed(4))),
                       torch.tensor(TrainTransform.crop_params(50, 50, torch.Generator().manual_seed(4))))


# ---------------------------------------------------------------- localization layouts

def write_cub(root: Path, rng) -> None:
    # class ids 2, 3, 5 (remapped to 0, 1, 2)
    # (id, file, class id, is_training_image, (w, h), box x y w h): images 1 and 4 are the test split
    entries = [(1, "002.b/x1.jpg", 2, 0, (40, 30), (4, 3, 10, 12)), (2, "003.c/x2.jpg", 3, 1, (50, 60), (0, 0, 50, 60)),
               (3, "005.e/x3.jpg", 5, 1, (40, 30), (10, 6, 20, 15)), (4, "002.b/x4.jpg", 2, 0, (64, 48), (1, 2, 3, 4))]
    save_images(root / "images", {p: rand_image(rng, h, w) for _, p, _, _, (w, h), _ in entries}, fmt="JPEG")
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, *_ in entries))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, *_ in entries))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t, *_ in entries))
    (root / "bounding_boxes.txt").write_text("".join(f"{e[0]} {' '.join(map(str, e[5]))}\n" for e in entries))
    (root / "classes.txt").write_text("1 001.a\n2 002.b\n3 003.c\n4 004.d\n5 005.e\n")


@pytest.mark.parametrize("resident", [False, True])
def test_cub_layout_boxes_rescaled_to_eval_size(tmp_path, resident):
    write_cub(tmp_path / "cub", np.random.default_rng(2))
    cfg = DataConfig(dataset="cub", root=str(tmp_path / "cub"), image_size=20, workers=0,
                     device_resident=resident, cache_dir=str(tmp_path / "cache"))
    b = build_data(cfg, seed=0, batch_size=1)
    assert b.class_names == ["002.b", "003.c", "005.e"] and b.num_classes == 3
    assert b.train.size == 2 and b.test.size == 2
    assert torch.equal(b.train.labels, torch.tensor([1, 2])) and torch.equal(b.test.labels, torch.tensor([0, 0]))
    # test images 1 (40x30, box x4 y3 w10 h12 -> 4,3,14,15) and 4 (64x48, box 1,2,3,4 -> 1,2,4,6): kept in
    # original pixels, mapped to any evaluated size in one step as int(x * size / width)
    np.testing.assert_array_equal(b.test_boxes.boxes[0], [[4, 3, 14, 15]])
    np.testing.assert_array_equal(b.test_boxes.at(20), [[[2, 2, 7, 10]], [[0, 0, 1, 2]]])
    np.testing.assert_array_equal(b.test_boxes.at(224), [[[22, 22, 78, 112]], [[3, 9, 14, 28]]])
    x, _, _ = collect(b.test, 0)
    ref = TF.resize(files_module.decode_file(tmp_path / "cub/images/002.b/x1.jpg"), [20, 20], antialias=True)
    assert ((b.denormalize(x[0]) * 255).round() - ref.float()).abs().max() <= 1


def write_wsol(root: Path, test_name: str = "te/c.png", listed_size: tuple[int, int] = (100, 50)) -> None:
    """Two train and two test images in wsolevaluation's metadata layout; ``listed_size``: what
    image_sizes.txt says about the first test image (really 100 x 50)."""
    rng = np.random.default_rng(3)
    sizes = {"tr/a.png": (30, 20), "tr/b.png": (20, 30), test_name: (100, 50), "te/d.png": (40, 40)}
    save_images(root, {p: rand_image(rng, h, w) for p, (w, h) in sizes.items()})
    sizes[test_name] = listed_size
    for split, ids, labels in (("train", ["tr/a.png", "tr/b.png"], [4, 7]), ("test", [test_name, "te/d.png"], [7, 7])):
        meta = root / "metadata" / split
        meta.mkdir(parents=True)
        (meta / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
        (meta / "class_labels.txt").write_text("".join(f"{i},{k}\n" for i, k in zip(ids, labels)))
        (meta / "image_sizes.txt").write_text("".join(f"{i},{sizes[i][0]},{sizes[i][1]}\n" for i in ids))
    (root / "metadata/test/localization.txt").write_text(
        f"{test_name},10,5,60,45\nte/d.png,0,0,39,39\n{test_name},80,0,99,49\n")


def test_wsol_metadata_multiple_boxes(tmp_path):
    root = tmp_path / "wsol"
    write_wsol(root)
    b = build_data(DataConfig(dataset="wsol", root=str(root), image_size=25, workers=0, device_resident=False,
                              cache_dir=str(tmp_path / "cache")), seed=0, batch_size=2)
    assert b.class_names == ["4", "7"] and torch.equal(b.test.labels, torch.tensor([1, 1]))
    # int(x / 4), int(y / 2) and int(39 * 25 / 40): truncated like the reference, never clipped
    np.testing.assert_array_equal(b.test_boxes.at(25)[0], [[2, 2, 15, 22], [20, 0, 24, 24]])
    np.testing.assert_array_equal(b.test_boxes.at(25)[1], [[0, 0, 24, 24]])


@pytest.mark.parametrize("lines, names", [("0 n01440764 7 tench, Tinca tinca\n1 n02086240 4 Shih-Tzu\n",
                                           ["Shih-Tzu", "tench"]),
                                          ("7 seven\n", ["4", "seven"])])
def test_wsol_classes_txt_names_the_labels(tmp_path, lines, names):
    """ImageNet subsets' '<index> <wnid> <label> <name, synonyms>' or plain '<label> <name>'; a label it
    does not name keeps its number."""
    root = tmp_path / "wsol"
    write_wsol(root)
    (root / "classes.txt").write_text(lines)
    b = build_data(DataConfig(dataset="wsol", root=str(root), image_size=25, workers=0, device_resident=False,
                              cache_dir=str(tmp_path / "cache")), seed=0, batch_size=2)
    assert b.class_names == names


@pytest.mark.parametrize("resident", [False, True])
def test_wsol_ids_may_hold_spaces(tmp_path, resident):
    write_wsol(tmp_path / "wsol", test_name="te/my photo.png")
    b = build_data(DataConfig(dataset="wsol", root=str(tmp_path / "wsol"), image_size=25, workers=0,
                              device_resident=resident, cache_dir=str(tmp_path / "cache")), seed=0, batch_size=2)
    np.testing.assert_array_equal(b.test_boxes.at(25)[0], [[2, 2, 15, 22], [20, 0, 24, 24]])


@pytest.mark.parametrize("resident", [False, True])
def test_wsol_wrong_image_size_is_refused(tmp_path, resident):
    write_wsol(tmp_path / "wsol", listed_size=(100, 60))
    with pytest.raises(DatasetError, match=r"image_sizes.txt gives 100x60 for .*c.png, but the file is 100x50"):
        build_data(DataConfig(dataset="wsol", root=str(tmp_path / "wsol"), image_size=25, workers=0,
                              device_resident=resident, cache_dir=str(tmp_path / "cache")), seed=0, batch_size=2)


@pytest.mark.parametrize("resident", [False, True])
def test_wsol_missing_image_names_the_file(tmp_path, resident):
    write_wsol(tmp_path / "wsol")
    (tmp_path / "wsol/te/d.png").unlink()
    with pytest.raises(DatasetError, match=r"te/d.png"):
        build_data(DataConfig(dataset="wsol", root=str(tmp_path / "wsol"), image_size=25, workers=0,
                              device_resident=resident, cache_dir=str(tmp_path / "cache")), seed=0, batch_size=2)


def test_imagenet_val_boxes_through_center_crop(tmp_path):
    root, rng = tmp_path / "inet", np.random.default_rng(4)
    save_images(root, {"train/n01/t.JPEG": rand_image(rng, 90, 90), "train/n02/u.JPEG": rand_image(rng, 90, 90),
                       "val/n02/v1.JPEG": rand_image(rng, 40, 80)}, fmt="JPEG")
    (root / "metadata/val").mkdir(parents=True)
    (root / "metadata/val/localization.txt").write_text("val/v1.JPEG,20,4,60,36\n")
    b = build_data(DataConfig(dataset="imagenet", root=str(root), image_size=28, workers=0,
                              cache_dir=str(tmp_path / "cache")), seed=0, batch_size=1)
    # 80x40 -> short side round(28/0.875)=32 -> 64x32, crop 28 at top 2 left 18; scale 0.8, cut to the crop
    np.testing.assert_array_equal(b.test_boxes.at(28)[0], [[0, 1, 27, 26]])
    assert b.class_names == ["n01", "n02"] and torch.equal(b.test.labels, torch.tensor([1]))


# ---------------------------------------------------------------- errors

def test_errors_name_the_path(tmp_path, small_folder):
    missing = tmp_path / "nowhere"
    for dataset in ("folder", "cub", "wsol", "imagenet"):
        with pytest.raises(DatasetError, match=re.escape(str(missing))):
            build_data(DataConfig(dataset=dataset, root=str(missing)), seed=0, batch_size=2)
    with pytest.raises(DatasetError, match="data.download=true"):
        build_data(DataConfig(dataset="cifar10", root=str(missing)), seed=0, batch_size=2)
    empty = tmp_path / "empty"
    (empty / "train" / "cls").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(DatasetError, match=re.escape(str(empty / "train" / "cls"))):
        build_data(DataConfig(dataset="folder", root=str(empty)), seed=0, batch_size=2)
    with pytest.raises(DatasetError, match="train/ and test/"):
        build_data(DataConfig(dataset="folder", root=str(empty / "train")), seed=0, batch_size=2)
    root, _ = small_folder
    bad = root / "train" / "cat" / "9.png"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really an image" * 10)
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        build_data(DataConfig(dataset="folder", root=str(root), cache_dir=str(tmp_path / "c")), seed=0, batch_size=2)
    with pytest.raises(DatasetError, match=re.escape(str(bad))):   # streamed: found before training
        build_data(DataConfig(dataset="folder", root=str(root), device_resident=False, workers=0,
                              cache_dir=str(tmp_path / "c")), seed=0, batch_size=11)
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match=re.escape(str(archive))):
        build_data(DataConfig(dataset="folder", root=str(archive), cache_dir=str(tmp_path / "c")), seed=0, batch_size=2)
    assert not any((tmp_path / "c" / "unpacked").iterdir())  # the failed unpack left nothing behind


# ---------------------------------------------------------------- real data ($SAOL_DATA)

@needs("cifar10-jpeg.tar.gz")
@pytest.mark.slow
def test_shared_cifar10_jpeg(tmp_path):
    b = build_data(DataConfig(dataset="folder", root=str(REAL_DATA / "cifar10-jpeg.tar.gz"),
                              cache_dir=str(tmp_path)), seed=0, batch_size=128)
    assert (b.train.size, b.test.size, b.num_classes) == (50000, 10000, 10)
    assert torch.equal(torch.bincount(b.test.labels), torch.full((10,), 1000))
    assert b.class_names[:3] == ["airplane", "automobile", "bird"]
    np.testing.assert_allclose(b.mean, [0.4914, 0.4822, 0.4465], atol=0.005)  # CIFAR-10's known channel means


@needs("cub200-50")
def test_shared_cub200_50(tmp_path):
    b = build_data(DataConfig(dataset="cub", root=str(REAL_DATA / "cub200-50"), image_size=224, workers=0,
                              cache_dir=str(tmp_path)), seed=0, batch_size=8)
    assert (b.train.size, b.test.size, b.num_classes) == (1500, 1389, 50)
    assert len(b.test_boxes) == 1389 and all(bx.shape == (1, 4) for bx in b.test_boxes.boxes)
    boxes = np.concatenate(b.test_boxes.at(224))
    # x + w of a box reaching the image's edge maps to 224, as in the reference (never clipped)
    assert (boxes >= 0).all() and (boxes <= 224).all() and (boxes[:, 2] > boxes[:, 0]).all()
    x, y, idx = next(iter(b.test.epoch(0)))
    assert x.shape == (8, 3, 224, 224) and torch.equal(y, b.test.labels[idx])


def test_holdout_moves_the_same_images_per_class_out_of_training(small_folder, tmp_path):
    root, images = small_folder
    common = dict(dataset="folder", root=str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
    full = build_data(DataConfig(**common), seed=0, batch_size=2)
    held = build_data(DataConfig(**common, holdout_per_class=2), seed=0, batch_size=2)
    assert held.train.size == 6 and held.test.size == 4 and held.test_boxes is None
    assert torch.equal(held.test.labels.sort().values, torch.tensor([0, 0, 1, 1]))
    # the held-out and kept images are the original training images, each exactly once, none from test
    train_rows = {bytes(img.numpy()) for img in full.train.images}
    parts = [bytes(img.numpy()) for img in torch.cat([held.train.images, held.test.images])]
    assert len(set(parts)) == 10 and set(parts) == train_rows
    assert not set(parts) & {bytes(img.numpy()) for img in full.test.images}
    # data.seed picks them, the run seed does not
    other_run = build_data(DataConfig(**common, holdout_per_class=2), seed=5, batch_size=2)
    assert torch.equal(other_run.test.images, held.test.images)
    other_data = build_data(DataConfig(**common, holdout_per_class=2, seed=1), seed=0, batch_size=2)
    assert not torch.equal(other_data.test.images, held.test.images)
    with pytest.raises(ConfigError, match="holdout_per_class=5 leaves a class without training images"):
        build_data(DataConfig(**common, holdout_per_class=5), seed=0, batch_size=2)
    with pytest.raises(ConfigError, match="for file datasets"):
        build_data(DataConfig(dataset="digits", holdout_per_class=1), seed=0, batch_size=2)


def test_holdout_carries_each_images_boxes_and_size_along():
    paths = [Path(f"{k}.jpg") for k in range(9)]
    labels = np.array([0, 1, 2] * 3)
    boxes = [np.array([[k, k, k + 1, k + 1]], float) for k in range(9)]
    sizes = np.arange(18).reshape(9, 2)
    split = FileSplit(paths, labels, boxes, sizes)
    moved = hold_out(Layout(split, FileSplit([], labels[:0]), ["a", "b", "c"]), 1, seed=3)
    assert len(moved.test.paths) == 3 and len(moved.train.paths) == 6
    assert sorted(moved.test.labels.tolist()) == [0, 1, 2]
    for part in (moved.train, moved.test):
        for path, label, box, size in zip(part.paths, part.labels, part.boxes, part.sizes):
            k = int(path.stem)
            assert label == labels[k] and box[0, 0] == k and tuple(size) == (2 * k, 2 * k + 1)
