"""Real-data smoke test: a few hundred steps on CIFAR-10 (JPEG q75, in $SAOL_DATA) learn, for the
GAP-FC baseline and for the full SAOL recipe (CutMix + SS1 + SS2 + SD). Skipped where the data is absent."""
from pathlib import Path

import pytest

from saol_core.config import make_config
from saol_core.train import train

from real_data import REAL_DATA, needs

ARCHIVE = REAL_DATA / "cifar10-jpeg.tar.gz"

pytestmark = [pytest.mark.slow, needs("cifar10-jpeg.tar.gz")]

STEPS = 300  # x batch 64 = 19,200 images, 0.4 epoch
COMMON = ["data.dataset=folder", f"data.root={ARCHIVE}", "data.image_size=32", "model.backbone=resnet20",
          "train.epochs=1", f"train.max_steps={STEPS}", "train.batch_size=64", "train.progress=false",
          "optim.lr=0.1", "optim.warmup_epochs=0.1", "optim.schedule=constant", "train.eval_batches=40"]
RECIPES = {
    "gap": ["model.heads=gap"],
    "saol_full": ["model.heads=saol+gap", "model.mask_head=true", "loss.cutmix_prob=0.5",
                  "loss.w_ss1=1", "loss.w_ss2=1"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_few_hundred_steps_on_cifar10_are_far_above_chance(tmp_path, recipe):
    cfg = make_config(None, [*COMMON, *RECIPES[recipe], f"out_dir={tmp_path}", f"name={recipe}",
                             f"data.cache_dir={Path(__file__).resolve().parents[1] / '.cache' / 'saol'}"])
    final = train(cfg)["final"]
    for head in ("saol", "gap"):
        if f"{head}_top1" in final:
            # chance is 10%; 300 steps of ResNet-20 reach ~40-50% here
            assert final[f"{head}_top1"] > 30.0, (head, final)
