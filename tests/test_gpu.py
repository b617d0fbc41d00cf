"""CUDA smoke tests (marker ``gpu``): skipped without a CUDA GPU, so CI never needs one; run on a GPU
machine by ``scripts/gpu_run.sh`` (``python -m pytest -m gpu tests/test_gpu.py``). One bf16 step of every
recipe, the graphed step (train.compile: CUDA graphs) against the eager one, and a run, eager and graphed,
that checkpoints, resumes and finishes on the GPU."""
import pytest
import torch
import torch._dynamo

from saol_core.bench.recipes import RECIPES, bench_step, recipe_config
from saol_core.config import make_config
from saol_core.cutmix import cutmix
from saol_core.runs import RunFolder, load_checkpoint
from saol_core.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_run.sh runs "
                                                                      "these on one)")]


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "full-step-teacher"])
def test_one_bf16_step_of_each_recipe(recipe):
    cfg = recipe_config("resnet20", recipe, batch_size=16, cutmix_prob=1.0, device="cuda", bf16=True)
    step = bench_step(cfg, 10, torch.device("cuda"))
    images = torch.randn(16, 3, 32, 32, device="cuda")
    labels = torch.randint(0, 10, (16,), device="cuda")
    losses = step(images, labels, cutmix(images, cfg.loss.cutmix_prob, 1.0, torch.Generator().manual_seed(0)))
    assert step.dtype == torch.bfloat16 and all(v.device.type == "cuda" for v in losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "full-step-teacher"])
def test_graphed_step_tracks_the_eager_step(recipe):
    """CUDA graphs (reduce-overhead) of every recipe: the first step's losses as eager's (bf16: 2 %), no
    recompile for new boxes once mixed and clean batches were each seen twice, and the returned losses
    survive the next replay."""
    kw = dict(batch_size=16, cutmix_prob=0.5, device="cuda", bf16=True)
    eager = bench_step(recipe_config("resnet20", recipe, **kw), 10, torch.device("cuda"))
    graphed = bench_step(recipe_config("resnet20", recipe, compile=True, **kw), 10, torch.device("cuda"))
    assert graphed.graphed and not eager.graphed
    g, mix_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batches = []
    for _ in range(10):
        images = torch.randn(16, 3, 32, 32, generator=g).cuda()
        labels = torch.randint(0, 10, (16,), generator=g).cuda()
        batches.append((images, labels, cutmix(images, eager.cfg.loss.cutmix_prob, 1.0, mix_gen)))
    kinds, seen, kept = {b[2].applied for b in batches}, [], []
    for i, batch in enumerate(batches):
        warm = all(seen.count(kind) >= 2 for kind in kinds)
        seen.append(batch[2].applied)
        with torch._dynamo.config.patch(error_on_recompile=warm):
            kept.append(graphed(*batch))
        reference = eager(*batch)
        if i == 0:
            assert all(float(kept[0][k]) == pytest.approx(float(v), rel=2e-2) for k, v in reference.items())
    assert all(torch.isfinite(v).all() for losses in kept for v in losses.values())


@pytest.mark.parametrize("compiled", ["false", "true"], ids=["eager", "graphed"])
def test_a_cuda_run_checkpoints_resumes_and_finishes(tmp_path, compiled):
    common = ["model.backbone=resnet20", "model.head_channels=8", "data.train_size=128", "data.test_size=64",
              "train.batch_size=32", "train.device=cuda", "train.amp=bf16", "train.progress=false",
              "loss.cutmix_prob=0.5", "model.mask_head=true", "loss.w_ss1=1", "loss.w_ss2=1",
              f"train.compile={compiled}", f"out_dir={tmp_path}", "name=g"]
    train(make_config(None, common + ["train.epochs=2"]))
    folder = RunFolder(tmp_path / "g")
    ckpt = load_checkpoint(folder.checkpoint)
    assert ckpt["epoch"] == 2 and ckpt["model"][next(iter(ckpt["model"]))].device.type == "cpu"  # loads anywhere
    folder.summary.unlink()   # as if killed after the last checkpoint: the resume finishes the run
    summary = train(make_config(None, common + ["train.epochs=2"]))
    assert summary["finished"] and summary["device"].startswith("cuda") and summary["amp"] == "bfloat16"
    assert summary["hardware_class"].startswith("cuda ") and [m["epoch"] for m in folder.read_metrics()] == [1, 2]
