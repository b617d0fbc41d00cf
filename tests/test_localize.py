"""Numeric tests of the WSOL study glue (saol_core.wsol: table, figures, speed): GMACs per method recounted by hand,
the Table 7 assembly, predicted boxes, the full-backward Grad-CAM, and the fine-tune path."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import matplotlib.colors as mcolors
from matplotlib.patches import Rectangle

import saol_core.train as train_mod
from saol_core import figrecords, localize, viz, wsol
from saol_core.wsol import speed, table as wsol_table
from saol_core.config import ModelConfig
from saol_core.model import build_model
from saol_core.runs import RunFolder, load_checkpoint
from saol_core.wsol import localization_maps

TINY = ["model.backbone=resnet20", "model.head_channels=8", "data.image_size=32", "data.train_size=64",
        "data.test_size=32", "train.batch_size=32", "train.epochs=1", "train.max_steps=2", "train.device=cpu",
        "train.threads=2", "train.progress=false", "loss.cutmix_prob=1.0"]


def conv(c_in, c_out, k, hw):
    return c_in * c_out * k * k * hw * hw


def resnet20_macs(size, last_stride=2):
    """Convs of the CIFAR ResNet-20 (option-A shortcuts: no shortcut convs) at size x size input."""
    s2, s3 = size // 2, size // 2 // last_stride
    return (conv(3, 16, 3, size) + 6 * conv(16, 16, 3, size)
            + conv(16, 32, 3, s2) + 5 * conv(32, 32, 3, s2)
            + conv(32, 64, 3, s3) + 5 * conv(64, 64, 3, s3)), s3


@pytest.mark.parametrize("output_stride", [None, 2])
def test_method_gmacs_recounted_by_hand(output_stride):
    k, mid, size = 10, 16, 32
    cfg = ModelConfig(backbone="resnet20", heads="saol+gap", head_channels=mid, mask_head=True,
                      output_stride=output_stride, pretrained="/nonexistent/weights.pth")
    backbone, hw = resnet20_macs(size, last_stride=2 if output_stride is None else 1)
    gap = backbone + 64 * k
    saol = (backbone + conv(64, mid, 3, hw) + conv(mid, 1, 1, hw)             # attention branch
            + conv(16 + 32 + 64, mid, 3, hw) + conv(3 * mid, k, 1, hw))       # 3 taps, classifier
    got = wsol.method_gmacs(cfg, k, size)   # mask head and pretrained file play no part
    same = pytest.approx(saol / 1e9, abs=0)
    assert got == {"saol": same, "attention": same, "spatial": same, "cam": pytest.approx(gap / 1e9, abs=0),
                   "gradcam": pytest.approx(gap / 1e9, abs=0)}


def fake_results(kind_offset):
    keys = ["top1_loc", "gt_known_loc", "top1_loc_best", "gt_known_loc_best", "max_box_acc",
            "max_box_acc_v2", "threshold", "best_threshold", "top1_cls"]
    return {k: kind_offset + i for i, k in enumerate(keys)}


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_table7_takes_each_number_from_its_key(threshold):
    results = {"gradcam": fake_results(200), "saol": fake_results(0), "cam": fake_results(100)}
    gmacs = {"saol": 4.62, "cam": 4.09, "gradcam": 4.09}
    table = wsol.table7(results, gmacs, threshold)
    assert list(table["method"]) == ["SAOL (A⊙Y_k)", "CAM", "Grad-CAM"]   # paper order, not dict order
    for (kind, off), (_, row) in zip([("saol", 0), ("cam", 100), ("gradcam", 200)], table.iterrows()):
        best = threshold is None
        assert row["Top-1 Loc"] == off + (2 if best else 0)
        assert row["GT-known Loc"] == off + (3 if best else 1)
        assert row["threshold"] == off + (7 if best else 6)
        assert (row["MaxBoxAcc"], row["MaxBoxAccV2"], row["top-1 cls"]) == (off + 4, off + 5, off + 8)
        assert row["GMACs"] == gmacs[kind] and row["backward"] == (kind == "gradcam")
    paper = table.set_index("method")
    assert paper.loc["SAOL (A⊙Y_k)", ["paper CUB Top-1 Loc", "paper ImageNet Top-1 Loc", "paper GMACs"]].tolist() \
        == [52.39, 45.01, 4.62]
    assert paper.loc["CAM", ["paper CUB Top-1 Loc", "paper ImageNet Top-1 Loc", "paper GMACs"]].tolist() \
        == [54.81, 47.25, 4.09]
    assert all(math.isnan(v) for v in paper.loc["Grad-CAM", ["paper CUB Top-1 Loc", "paper GMACs"]])
    scraps = wsol.scraps(table)
    assert scraps["cam_top1_loc"] == 100 + (2 if threshold is None else 0)
    assert scraps["gradcam_max_box_acc_v2"] == 205 and scraps["saol_gmacs"] == 4.62
    assert len(scraps) == 3 * len(wsol_table.SCRAPS)


def test_markdown_formats_numbers():
    df = pd.DataFrame({"method": ["a"], "x": [1.23456], "GMACs": [0.0408], "backward": [True], "p": [float("nan")]})
    assert wsol.markdown(df).splitlines() == ["| method | x | GMACs | backward | p |", "|---|---|---|---|---|",
                                                  "| a | 1.23 | 0.0408 | yes | - |"]


def test_predicted_box_is_the_evaluators_largest_region_in_image_pixels():
    maps = torch.zeros(2, 8, 8)
    maps[0, 2:4, 4:7] = 1.0          # rows 2-3, cols 4-6
    maps[1, 5:8, 0:2] = 2.0          # touches the bottom border
    maps[1, 0, 0] = 1.0              # a smaller region
    # eval_size = map size: bicubic resizing to the same size is the identity
    boxes = wsol.predicted_box(maps, 0.5, image_size=32, eval_size=8)
    # wsolevaluation's extent: x1 = min(max_x + 1, W - 1); then x 32/8
    np.testing.assert_array_equal(boxes, 4 * np.array([[4, 2, 7, 4], [0, 5, 2, 7]]))


def test_full_backward_gradcam_gives_wsols_gradcam_maps():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet20", heads="saol+gap", head_channels=8), 5).eval()
    x = torch.randn(3, 3, 16, 16)
    expected, _ = localization_maps(model, x, "gradcam")
    torch.testing.assert_close(speed.gradcam_full_backward(model, x), expected, rtol=1e-5, atol=1e-7)


class Stop(Exception):
    pass


def test_finetune_with_halved_stride_starts_from_the_trained_weights(tmp_path, monkeypatch):
    model, cfg, summaries = localize.prepare(None, TINY + [f"out_dir={tmp_path}", "name=base"])
    run = tmp_path / "base"
    trained = load_checkpoint(RunFolder(run).checkpoint)["model"]
    assert summaries["train"]["run_dir"] == str(run) and cfg.model.output_stride is None

    # stop the fine-tuning run before its first step and look at the model it starts from
    built = []
    real_build = train_mod.build_model
    monkeypatch.setattr(train_mod, "build_model", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    monkeypatch.setattr(train_mod, "cutmix", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        localize.prepare(None, run_dir=str(run), finetune_overrides=["model.output_stride=2"])
    start = built[-1].state_dict()
    assert start.keys() == trained.keys() and all(torch.equal(start[k], trained[k]) for k in trained)
    # removing the last stage's stride leaves the first two stages' function unchanged
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        old = model.backbone(x)  # (the run trained channels_last; compare in one memory format)
        new = built[-1].eval().to(memory_format=torch.contiguous_format).backbone(x)
    for a, b in zip(old[:2], new[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert old[2].shape[-1] == 8 and new[2].shape[-1] == 16
    monkeypatch.undo()

    ft_model, ft_cfg, ft_summaries = localize.prepare(None, run_dir=str(run),
                                                      finetune_overrides=["model.output_stride=2"])
    assert ft_cfg.name == "base-ft" and ft_cfg.model.output_stride == 2
    assert ft_cfg.train.init_from == str(run / "checkpoint.pt")
    assert ft_summaries["finetune"]["run_dir"] == str(tmp_path / "base-ft")
    for kind in ("saol", "cam", "gradcam"):
        (before, _), (after, _) = localization_maps(model, x, kind), localization_maps(ft_model, x, kind)
        assert before.shape[-2:] == (8, 8) and after.shape[-2:] == (16, 16)


class Boxes:
    """A loader-like object: epoch(0) yields (images, labels, indices) batches of 2."""

    def __init__(self, n, size):
        self.n, self.size = n, size

    def epoch(self, epoch):
        for start in range(0, self.n, 2):
            idx = torch.arange(start, min(start + 2, self.n))
            yield torch.zeros(len(idx), 3, self.size, self.size), torch.zeros(len(idx), dtype=torch.long), idx


def test_center_baseline_finds_the_best_centred_box():
    # 16 px images evaluated at 64 px: three centred boxes of half the side, one box in a corner
    centred = np.array([[4.0, 4.0, 11.0, 11.0]])
    boxes = [centred, centred, centred, np.array([[0.0, 0.0, 3.0, 3.0]])]
    boxes = wsol.GroundTruthBoxes.square(boxes, 16)
    r = wsol.center_baseline(Boxes(4, 16), boxes, eval_size=64)
    assert r["gt_known_loc_best"] == 75.0 and r["max_box_acc"] == 75.0 and r["top1_cls"] == 0.0
    assert wsol.center_baseline(Boxes(4, 16), boxes, eval_size=64, max_batches=1)["max_box_acc"] == 100.0
    table = wsol.table7({"center": r}, {})
    assert math.isnan(table.loc[0, "Top-1 Loc"]) and table.loc[0, "GT-known Loc"] == 75.0
    assert "center_top1_loc" not in wsol.scraps(table) and wsol.scraps(table)["center_gmacs"] == 0.0


def test_center_baselines_top1_loc_judges_its_box_with_a_heads_classification():
    """top1_loc_<head>: the centred box at the chosen threshold AND that head right, counted per image; the
    same number as the evaluator's own Top-1 Loc when it is given the head's correctness with the Gaussian."""
    rng = np.random.default_rng(0)
    n, size, eval_size = 12, 16, 32
    boxes = [np.array([[4.0, 4.0, 11.0, 11.0]]) if i % 3 else np.array([[0.0, 0.0, 5.0, 5.0]]) for i in range(n)]
    boxes = wsol.GroundTruthBoxes.square(boxes, size)
    select = np.arange(n) % 4 == 0
    correct = {"saol": rng.random(n) < 0.6, "cam": np.ones(n, bool)}
    r = wsol.center_baseline(Boxes(n, size), boxes, eval_size=eval_size, cam_step=0.05, select=select,
                             correct=correct)
    assert r["top1_loc_cam"] == r["gt_known_loc"] and r["top1_loc"] == 0.0   # always right: GT-known Loc
    gauss = wsol.center_gaussian(eval_size)
    gt = boxes.at(eval_size)
    for name, right in correct.items():
        ev = wsol.SelectedThresholdEvaluator(select, cam_step=0.05)
        for _, _, idx in Boxes(n, size).epoch(0):
            idx = idx.numpy()
            ev.accumulate(np.broadcast_to(gauss, (len(idx), eval_size, eval_size)), [gt[i] for i in idx],
                          right[idx], idx)
        assert r[f"top1_loc_{name}"] == ev.compute()["top1_loc"], name
    assert 0 < r["top1_loc_saol"] < r["gt_known_loc"]


def test_selection_mask_takes_the_same_images_per_class_whatever_the_run():
    labels = np.repeat([0, 1, 2], [6, 3, 5])
    mask = wsol.selection_mask(labels, 4, seed=0)
    assert [int(mask[labels == k].sum()) for k in range(3)] == [4, 3, 4]   # a small class gives all it has
    np.testing.assert_array_equal(mask, wsol.selection_mask(labels, 4, seed=0))
    assert not np.array_equal(mask, wsol.selection_mask(labels, 4, seed=1))
    assert wsol.selection_mask(labels, 0, seed=0) is None


def test_center_gaussian_is_the_baselines_map():
    g = wsol.center_gaussian(8)
    assert g.shape == (8, 8) and g.min() == 0.0 and g.max() == 1.0
    np.testing.assert_allclose(g, g[::-1, ::-1])
    d2 = (3.5 ** 2) * 2     # a corner pixel's squared distance from the centre
    e = np.exp(-np.array([0.5 ** 2 * 2, d2]) / (2 * 2.0 ** 2))   # sigma = 8 / 4
    assert g[3, 3] == 1.0 and g[0, 0] == 0.0 and g[0, 3] == pytest.approx(
        (np.exp(-(3.5 ** 2 + 0.5 ** 2) / 8) - e[1]) / (e[0] - e[1]))


def test_run_summary_carries_the_localization_record(tmp_path):
    """wsol.enabled: the finished run's summary.final holds every kind's record (the same numbers as
    evaluate_localization on the trained model with the same selection split), the factors and the
    centre baseline; a GAP-FC-only run records CAM alone."""
    cfg = train_mod.make_config(None, TINY + [f"out_dir={tmp_path}", "name=saol", "wsol.enabled=true",
                                             "wsol.eval_size=32", "wsol.select_per_class=1", "wsol.cam_step=0.05"])
    final = train_mod.train(cfg)["final"]
    assert final["wsol_selection_images"] == 10 and final["wsol_scored_images"] == 22
    model, _ = train_mod.load_run(cfg.run_dir())
    data = train_mod.build_data(cfg.data, seed=cfg.seed, batch_size=32)
    select = wsol.selection_mask(data.test.labels.numpy(), 1, 0)
    correct = {}
    again = wsol.evaluate_localization(model, data.test, data.test_boxes, ["saol", "cam", "attention", "spatial"],
                                       32, 0.05, select=select, progress=False, correct=correct)
    centre = wsol.center_baseline(data.test, data.test_boxes, 32, 0.05, select=select, correct=correct)
    assert {k: final[f"center_top1_loc_{k}"] for k in correct} == {k: centre[f"top1_loc_{k}"] for k in correct}
    for kind, right in correct.items():   # each head's correctness, recorded per image
        assert 100.0 * right[~select].mean() == pytest.approx(again[kind]["top1_cls"]), kind
    for kind, res in again.items():
        assert {k: final[f"{kind}_{k}"] for k in wsol.RECORD_KEYS} == {k: res[k] for k in wsol.RECORD_KEYS}, kind
        assert final[f"{kind}_backward"] == 0.0
    assert final["center_gmacs"] == 0.0 and "center_top1_cls" not in final
    assert final["saol_gmacs"] > final["cam_gmacs"] > 0
    # the figures' arrays are part of the run record: drawn again with no checkpoint left
    for name in ("checkpoint.pt", "best.pt"):
        (cfg.run_dir() / name).unlink()
    record = figrecords.load(cfg.run_dir() / figrecords.BOXES)
    labels = data.test.labels[torch.from_numpy(record["indices"])].tolist()
    assert len(record["titles"]) == 4 and len(set(labels)) == 4        # one image per class
    assert [str(t) for t in record["titles"]] == [f"label {data.class_names[k]}" for k in labels]
    fig = localize.localization_figure(cfg.run_dir())
    assert f"at {final['saol_threshold']:.2f} (lime)" in fig._suptitle.get_text()
    grid = np.array(viz.panels(fig)).reshape(4, 6)   # input, A, Y top-1, Y top-2, A⊙Y top-1, A⊙Y top-2
    boxes = data.test_boxes.at(32)
    for i, index in enumerate(record["indices"]):   # each row's boxes on its own input (truth, SAOL, CAM) and A⊙Y top-1
        outlines = [[p for p in ax.patches if isinstance(p, Rectangle)] for ax in grid[i]]
        assert [len(o) for o in outlines] == [len(boxes[index]) + 2, 0, 0, 0, 1, 0]
        assert [o.get_edgecolor() for o in outlines[0][-2:]] == [mcolors.to_rgba("lime"), mcolors.to_rgba("orange")]
        truth = sorted(tuple(p.get_xy()) for p in outlines[0][:-2])
        assert truth == sorted((x0 - 0.5, y0 - 0.5) for x0, y0, _, _ in boxes[index])
    fig5 = viz.fig5(cfg.run_dir())                    # from maps_fig5.npz: 4 pairs of different classes
    titles = [ax.get_title() for ax in np.array(viz.panels(fig5)).reshape(4, 6)[:, 0]]
    assert all(t.endswith("(box)") and len(set(t[:-6].split(" + "))) == 2 for t in titles)
    # classes named by their dataset folder (CUB) read as names, wrapped to the panel
    folders = figrecords.load(cfg.run_dir() / figrecords.FIG5)
    folders["titles"] = np.array(["001.Black_footed_Albatross + 002.Laysan_Albatross (box)"] * 4)
    first = np.array(viz.panels(viz.draw_maps(folders))).reshape(4, 6)[0, 0].get_title()
    assert first == "Black footed Albatross +\nLaysan Albatross (box)"
    assert viz.maps.readable("label Shih-Tzu, 7 (n02086240)") == "label Shih-Tzu, 7 (n02086240)"
    everything = train_mod.make_config(None, TINY + [f"out_dir={tmp_path}", "name=all", "wsol.enabled=true"])
    with pytest.raises(train_mod.ConfigError, match="select_per_class=10 takes every one of the 32 test images"):
        train_mod.train(everything)    # refused before training: 32 test images, <= 10 per class
    assert not (tmp_path / "all").exists()
    gap = train_mod.make_config(None, TINY + [f"out_dir={tmp_path}", "name=gap", "wsol.enabled=true", "model.heads=gap",
                                             "loss.w_sd=0", "wsol.eval_size=32", "wsol.center=false",
                                             "wsol.select_per_class=0"])
    final = train_mod.train(gap)["final"]
    assert {k.split("_")[0] for k in final if k.endswith("_top1_loc")} == {"cam"}
    assert localize.localization_figure(gap.run_dir()) is None


def test_train_crop_only_for_streamed_images(tmp_path):
    from saol_core.config import ConfigError, make_config
    with pytest.raises(ConfigError, match="data.train_crop is for streamed"):
        train_mod.train(make_config(None, TINY + [f"out_dir={tmp_path}", "data.train_crop=24"]))
    with pytest.raises(ConfigError, match="data.train_crop must be >= 8"):
        make_config(None, ["data.train_crop=4"])
