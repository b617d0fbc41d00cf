"""Every notebook, run with smoke parameters through papermill into a temporary folder; the metrics it
records with scrapbook are checked against the run folders / a recomputation (not just for presence).
"""
import json
import math
import shutil
from pathlib import Path

import papermill as pm
import pytest
import scrapbook as sb
import yaml

from saol_core import study as st
from saol_core import viz
from saol_core.config import ModelConfig
from saol_core.model import build_model
from saol_core.study import ROOT

NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.slow
SMOKE = ["train.epochs=2", "train.max_steps=3", "train.device=cpu", "train.threads=1", "data.train_size=128",
         "data.test_size=64", "model.head_channels=8"]


def run(name: str, tmp_path: Path, **parameters) -> dict:
    """Execute notebooks/<name>.ipynb (cwd = project root) and return its scraps {name: value}."""
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(ROOT),
                        progress_bar=False)
    return {k: v.data for k, v in sb.read_notebook(str(out)).scraps.items()}


def test_01_train_records_the_runs_final_metrics(tmp_path):
    scraps = run("01_train", tmp_path, PARAMS="params/default.yaml", OUT_DIR=str(tmp_path / "runs"),
                 OVERRIDES=["name=nb", *SMOKE, "loss.cutmix_prob=1.0", "model.mask_head=true",
                            "loss.w_ss1=1.0", "loss.w_ss2=1.0"])
    summary = json.loads((tmp_path / "runs/nb/summary.json").read_text())
    assert summary["finished"] and scraps["epochs"] == 2 and scraps["run_dir"] == str(tmp_path / "runs/nb")
    for key in ("saol_top1", "saol_top5", "gap_top1", "gap_top5"):
        assert scraps[key] == summary["final"][key] and 0 <= scraps[key] <= 100
        assert scraps[key] * 64 / 100 == pytest.approx(round(scraps[key] * 64 / 100))  # k of 64 test images
    assert scraps["saol_top5"] >= scraps["saol_top1"] and scraps["gap_top5"] >= scraps["gap_top1"]
    assert math.isfinite(scraps["images_per_s"]) and scraps["images_per_s"] > 0
    metrics = [json.loads(x) for x in (tmp_path / "runs/nb/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and all(m["train_ss2"] >= 0 for m in metrics)


@pytest.fixture(scope="module")
def trained_study(tmp_path_factory):
    """The smoke default study (2 rows x 2 variants, tiny overlay), one seed, trained in-process (seconds)."""
    from saol_core.config import make_config
    from saol_core.train import train
    tmp = tmp_path_factory.mktemp("study")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({"extends": str(ROOT / "params/smoke/default.yaml"), "study": {"seeds": [0]}}))
    study = st.load_study(path)
    for r in st.expand(study):
        train(make_config(path, r.overrides + [f"out_dir={tmp / 'out/runs'}"]))
    return path, tmp / "out"


def test_02_table_collects_the_runs(trained_study, tmp_path):
    path, out = trained_study
    scraps = run("02_table", tmp_path, PARAMS=str(path), OUT_DIR=str(out))
    assert scraps["n_runs"] == scraps["n_finished"] == 4
    cells = {(c["row"], c["column"]): c for c in scraps["cells"]}
    assert len(cells) == 2 * 3
    for (row, column), cell in cells.items():
        variant, head = {"GAP-FC": ("gap", "gap"), "SAOL": ("saol", "saol"), "SD GAP-FC": ("saol", "gap")}[column]
        final = json.loads((out / f"runs/{row}-{variant}-s0/summary.json").read_text())["final"]
        assert cell["n"] == 1 and cell["mean"] == pytest.approx(final[f"{head}_top1"]) and cell["std"] is None
        if column != "GAP-FC":  # delta to the GAP-FC baseline of the same row
            assert cell["delta"] == pytest.approx(cell["mean"] - cells[row, "GAP-FC"]["mean"])
    readme = (out / "README.md").read_text()
    assert "4/4 runs finished" in readme and (out / "figures/fig5.png").stat().st_size > 10_000
    assert (out / "table.md").read_text().count("[n=1]") == 6
    source = viz.figure_source(out / "figures/fig5.png")
    assert source == "resnet20_cutmix-saol-s0" and f"### Fig. 5-style maps of {source}" in readme  # the full method
    # records without checkpoints (as committed): the kept figure still names the run it was drawn from
    records = tmp_path / "records"
    shutil.copytree(out, records, ignore=shutil.ignore_patterns("*.pt"))
    run("02_table", tmp_path, PARAMS=str(path), OUT_DIR=str(records))
    assert f"### Fig. 5-style maps of {source}" in (records / "README.md").read_text()


def test_03_explorer_maps_are_distributions(trained_study, tmp_path):
    _, out = trained_study
    scraps = run("03_explorer", tmp_path, RUNS=str(out / "runs"))
    assert scraps["attention_sum_max_error"] < 1e-5 and scraps["spatial_sum_max_error"] < 1e-5
    assert 0 <= scraps["saol_gap_agreement"] <= 1
    assert scraps["explorer_outputs"] == ["stream", "display_data"]  # the live view drew (no error output)


def test_04_costs_counts_what_the_model_has(tmp_path):
    scraps = run("04_costs", tmp_path, BACKBONES=["resnet20"], STEPS=1, REPEATS=1, BATCH=4)
    rows = {(r["heads"], r["num_classes"]): r for r in scraps["costs"]}
    assert set(rows) == {("gap", 10), ("saol+gap", 10)}
    for (heads, k), r in rows.items():
        model = build_model(ModelConfig(backbone="resnet20", heads=heads), k)
        assert r["params"] == sum(p.numel() for p in model.parameters())
        assert r["train img/s"] > 0 and r["eval img/s"] > 0
    # CIFAR ResNet-20 (3 stages of 3 basic blocks) at 32x32: ~41 M MACs; SAOL adds a small fraction
    assert 35e6 < rows["gap", 10]["macs"] < 45e6 < rows["saol+gap", 10]["macs"] < 1.5 * rows["gap", 10]["macs"]
