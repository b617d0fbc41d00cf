"""saol_core.study: grid expansion, override order, skip-finished, failure reporting, table numbers.

The runner tests execute tiny stand-in notebooks (a few seconds of kernel start each); everything else
runs on fake run folders.
"""
import json
import os
import shutil
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from saol_core import study as st
from saol_core.config import ConfigError, format_value, make_config, parse_overrides
from saol_core.runs import RunFolder
from saol_core.study.runner import STRIPPED
from saol_core.study.report import _mean_std
from saol_core.study import ROOT


def write_yaml(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def make_study(tmp_path: Path, **study) -> Path:
    """A digits study file extending the project's default params, with ``study`` replacing its section."""
    spec = {"seeds": [0, 1], "rows": [{"name": "a", "label": "Row A", "set": {"optim.lr": 0.2}},
                                      {"name": "b", "set": {"optim.lr": 0.3}}],
            "variants": [{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}},
                         {"name": "saol", "set": {"model.heads": "saol+gap", "optim.lr": 0.05}}],
            "columns": [{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"},
                        {"label": "SAOL", "variant": "saol", "metric": "saol_top1", "delta_to": "GAP-FC"}]}
    spec.update(study)
    return write_yaml(tmp_path / "study.yaml", {"extends": str(ROOT / "params/default.yaml"), "name": "t",
                                                "study": spec})


def test_expand_grid_order_and_override_precedence(tmp_path):
    overlay = write_yaml(tmp_path / "overlay.yaml", {"train": {"epochs": 1}, "optim": {"weight_decay": 0.0}})
    path = make_study(tmp_path, set={"optim.weight_decay": 0.1, "train.batch_size": 16},
                      overlay=str(overlay), grid={"model.head_channels": [8, 16]})
    study = st.load_study(path)
    runs = st.expand(study, extra=["train.threads=1"])
    assert len(runs) == 2 * 2 * 2 * 2  # rows x grid x variants x seeds
    assert [r.name for r in runs[:3]] == ["a_head_channels8-gap-s0", "a_head_channels8-gap-s1",
                                          "a_head_channels8-saol-s0"]
    by_name = {r.name: make_config(path, r.overrides) for r in runs}
    cfg = by_name["b_head_channels16-saol-s1"]
    assert (cfg.seed, cfg.name, cfg.model.head_channels) == (1, "b_head_channels16-saol-s1", 16)
    assert cfg.optim.lr == 0.05           # variant set beats row set
    assert cfg.optim.weight_decay == 0.0  # overlay beats study set
    assert cfg.train.batch_size == 16 and cfg.train.epochs == 1 and cfg.train.threads == 1
    assert by_name["b_head_channels8-gap-s0"].optim.lr == 0.3  # row set beats the file
    assert study.rows[0].label == "Row A (head_channels=8)"
    assert [r.name for r in st.expand(study, only=["a_*-saol-s1"])] == [
        "a_head_channels8-saol-s1", "a_head_channels16-saol-s1"]


def test_a_bare_grid_gets_one_run_per_combination_and_a_top1_column(tmp_path):
    path = write_yaml(tmp_path / "sweep.yaml", {"name": "sweep", "study": {"grid": {"optim.lr": [0.05, 0.2]}}})
    study = st.load_study(path)
    assert [r.name for r in st.expand(study)] == ["sweep_lr0.05-run-s0", "sweep_lr0.2-run-s0"]
    assert [(c.variant, c.metric) for c in study.columns] == [("run", ["top1"])]
    assert [make_config(path, r.overrides).optim.lr for r in st.expand(study)] == [0.05, 0.2]


def test_recipe_rows_change_only_what_differs(tmp_path):
    recipe = write_yaml(tmp_path / "recipe.yaml", {"source": "recipe X", "data": {"dataset": "cifar100"},
                                                   "optim": {"lr": 0.7, "momentum": 0.9},
                                                   "train": {"epochs": 3}})
    path = make_study(tmp_path, rows=[{"name": "r", "recipe": str(recipe)}])
    run = st.expand(st.load_study(path))[0]
    cfg = make_config(path, run.overrides)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.data.dataset) == (0.7, 3, "digits")  # data stays the study's
    assert not any(o.startswith("optim.momentum=") for o in run.overrides)  # same as the file: not repeated
    assert cfg.source.endswith("; recipe X")


@pytest.mark.parametrize("value", ["saol+gap", "null", "", "a: b", "0.5", None, 0.5, 3, True, [0, 1, 2],
                                   "docs/method.md §5"])
def test_override_text_reads_back_unchanged(value):
    text = format_value(value)
    assert parse_overrides([f"x.y={text}"]) == {"x": {"y": value}}


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown study keys"),
    ({"columns": [{"label": "X", "variant": "nope"}]}, "names variant 'nope'"),
    ({"paper": {"a": [1.0]}}, "study.paper['a']"),
    ({"delta_row": "zz"}, "delta_row"),
    ({"variants": [{"name": "bad name"}]}, "name of letters"),
    ({"seeds": "0"}, "study.seeds"),
    ({"rows": [{"name": "a", "seeds": []}]}, "row 'a' seeds"),
])
def test_bad_study_sections_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        st.load_study(make_study(tmp_path, **change))


def test_every_shipped_study_expands_into_valid_configs():
    files = sorted((ROOT / "params").glob("*.yaml")) + sorted((ROOT / "params/smoke").glob("*.yaml"))
    files = [f for f in files if f.name != "overlay.yaml"]
    assert len(files) >= 18
    for path in files:
        study = st.load_study(path)
        runs = st.expand(study)
        per_row = sum(len(st.spec.row_seeds(study, r)) for r in study.rows)
        assert len({r.name for r in runs}) == len(runs) == per_row * len(study.variants)
        for run in runs:
            cfg = make_config(path, run.overrides)
            if "smoke" in path.parts:  # the overlay makes every smoke run tiny and offline
                assert (cfg.data.dataset, cfg.model.backbone, cfg.train.device) == ("digits", "resnet20", "cpu")
        if "smoke" in path.parts:   # runs on any machine, even where its full study pins a hardware class
            assert not study.hardware, path
    assert st.load_study(ROOT / "params/wsol_cub50.yaml").hardware


def test_paper_numbers_match_the_printed_deltas():
    """Tables 1-2 print SAOL and SD GAP-FC as (delta to GAP-FC): recompute them from the transcription."""
    printed = {"table1_cifar10": [0.53, 0.51, 0.33, 0.33, 0.61, 0.59, 0.29, 0.28, 1.61, 1.49, 0.44, 0.40,
                                  -0.18, -0.14, 0.44, 0.36, 0.20, 0.18, 0.36, 0.35],
               "table2_cifar100": [1.77, 1.45, 1.32, 0.83, 0.76, 1.03, 1.30, 1.30, 1.29, 1.37, 0.08, 0.00,
                                   -0.89, -1.48, 0.70, 0.35, 0.29, 0.52, 0.76, 0.84]}
    for name, deltas in printed.items():
        study = st.load_study(ROOT / f"params/{name}.yaml")
        ours = [round(study.papers["paper"][r.name][j][0] - study.papers["paper"][r.name][0][0], 2)
                for r in study.rows for j in (1, 2)]
        assert ours == deltas, name


CPU = {"cpu": "AMD EPYC", "cpu_count": 2, "cpu_capability": "AVX512", "torch_threads": 1}


def fake_run(runs_dir: Path, name: str, final: dict | None, history: list[dict] = (), torch: str = "2.13.0+cu130",
             **summary) -> None:
    """A run folder: finished (``final`` metrics; by default a bf16 run on an AVX512 CPU) or interrupted."""
    folder = runs_dir / name
    folder.mkdir(parents=True)
    if final is not None:
        (folder / "summary.json").write_text(json.dumps({"finished": True, "final": final, "wall_time_s": 1.0,
                                                         "images_per_s": 10.0, "device": "cpu", "amp": "bfloat16",
                                                         "hardware": CPU, **summary}))
        (folder / "environment.json").write_text(json.dumps({"versions": {"torch": torch}}))
    else:
        (folder / "checkpoint.pt").write_bytes(b"")  # interrupted: resumable
    (folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def test_table_numbers_mean_std_delta_by_hand(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1, 2], paper={"a": [90.0, 91.5], "b": [80.0, None]}, delta_row="a")
    study = st.load_study(path)
    runs_dir = tmp_path / "out/runs"
    gap = {"a": [90.0, 91.0, 95.0], "b": [70.0, 72.0, None]}          # b-gap-s2 is unfinished
    saol = {"a": [93.0, 93.0, 96.0], "b": [71.0, 75.0, 79.0]}
    for row in ("a", "b"):
        for seed in range(3):
            fake_run(runs_dir, f"{row}-gap-s{seed}", None if gap[row][seed] is None else {"gap_top1": gap[row][seed]},
                     [{"epoch": 1, "train_loss": 2.0, "gap_top1": 10.0}])
            fake_run(runs_dir, f"{row}-saol-s{seed}", {"saol_top1": saol[row][seed], "gap_top1": 1.0})
    results = st.collect(study, tmp_path / "out")
    assert dict(results.status.value_counts()) == {"finished": 11, "partial": 1}
    summary = st.summarize(study, results).set_index(["row", "column"])
    cell = summary.loc[("a", "GAP-FC")]
    assert cell.n == 3 and cell["mean"] == pytest.approx(92.0)
    assert cell["std"] == pytest.approx(math.sqrt(((90 - 92) ** 2 + (91 - 92) ** 2 + (95 - 92) ** 2) / 2))
    assert math.isnan(cell.delta)                                  # the reference cell itself
    b_gap = summary.loc[("b", "GAP-FC")]
    assert b_gap.n == 2 and b_gap["mean"] == pytest.approx(71.0)   # the partial run is left out
    assert b_gap.delta == pytest.approx(71.0 - 92.0)               # delta_row a, same column
    assert b_gap.paper_delta == pytest.approx(80.0 - 90.0)
    b_saol = summary.loc[("b", "SAOL")]
    assert b_saol.delta == pytest.approx(75.0 - 92.0)              # delta_to GAP-FC of row a
    assert math.isnan(b_saol.paper_delta)                          # no paper number there
    md = st.table_markdown(study, st.summarize(study, results))
    assert "| Row A | 92.00 ± 2.65 [n=3] | 90.00 | 94.00 ± 1.73 (+2.00) [n=3] | 91.50 (+1.50) |" in md
    assert "| b | 71.00 ± 1.41 (-21.00) [n=2] | 80.00 (-10.00) | 75.00 ± 4.00 (-17.00) [n=3] | — |" in md
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {})
    assert "11/12 runs finished" in report.read_text()
    assert (tmp_path / "out/table.md").read_text().count("\n|") == 4
    assert len(st.histories(tmp_path / "out", results)) == 6


def test_mean_std_edge_cases():
    assert _mean_std([]) == (None, None)
    assert _mean_std([3.0]) == (3.0, None)
    assert _mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))


def notebook_of(path: Path, *cells: str) -> Path:
    """A training-notebook stand-in: the runner's parameters cell, then ``cells``, where ``run`` is the
    run folder (OUT_DIR/<name>) and ``o`` the overrides as a dict."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    params = nbformat.v4.new_code_cell('PARAMS = ""\nOVERRIDES = []\nOUT_DIR = ""')
    params.metadata["tags"] = ["parameters"]
    setup = ("import json, os, pathlib, time\n"
             "o = dict(x.split('=', 1) for x in OVERRIDES)\n"
             "run = pathlib.Path(OUT_DIR) / o['name']\n"
             "run.mkdir(parents=True, exist_ok=True)\n")
    nb.cells = [params, *(nbformat.v4.new_code_cell(setup + c if i == 0 else c) for i, c in enumerate(cells))]
    nbformat.write(nb, str(path))
    return path


def stand_in_notebook(path: Path) -> Path:
    """Writes a finished summary, or raises for model.backbone=resnet56."""
    return notebook_of(path, "(run / 'executed').write_text('yes')",
                       "if o.get('model.backbone') == 'resnet56':\n    raise RuntimeError('boom')",
                       "(run / 'summary.json').write_text(json.dumps({'finished': True, 'final': {'gap_top1': 50.0}}))")


def test_runner_skips_finished_reports_failures_and_goes_on(tmp_path, capsys):
    notebook = stand_in_notebook(tmp_path / "train.ipynb")
    path = make_study(tmp_path, seeds=[0], notebook=str(notebook),
                      rows=[{"name": "ok"}, {"name": "bad", "set": {"model.backbone": "resnet56"}}],
                      variants=[{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}}],
                      columns=[{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"}])
    out = tmp_path / "out"
    fake_run(out / "runs", "done-gap-s0", {"gap_top1": 1.0})
    study = st.load_study(path)
    study.rows.insert(0, st.Row("done", "done"))
    failures = st.run_study(study, out, table=False)
    assert (out / "runs/ok-gap-s0/summary.json").exists() and (out / "runs/ok-gap-s0/train.ipynb").exists()
    assert not (out / "runs/done-gap-s0/executed").exists()              # finished: skipped
    assert (out / "runs/bad-gap-s0/executed").exists()                   # ran up to the failing cell
    assert list(failures) == ["bad-gap-s0"]
    report = failures["bad-gap-s0"]
    assert "RuntimeError: boom" in report and "bad-gap-s0/train.ipynb" in report
    assert "failing cell In [4]: if o.get('model.backbone') == 'resnet56':" in report  # the failing cell, as numbered there
    printed = capsys.readouterr()
    assert "FAILED bad-gap-s0" in printed.out + printed.err
    # the CLI exits non-zero while a run fails; the finished ones are not re-run
    (out / "runs/ok-gap-s0/executed").unlink()
    assert st.main([str(path), "--out", str(out), "--no-table"]) == 1
    assert not (out / "runs/ok-gap-s0/executed").exists()


def test_runner_goes_seed_by_seed_and_leaves_runs_another_process_holds(tmp_path, capsys):
    notebook = notebook_of(tmp_path / "train.ipynb",
                           "(run.parent / 'order').open('a').write(o['name'] + '\\n')\n"
                           "(run / 'summary.json').write_text(json.dumps({'finished': True, 'final': {'gap_top1': 5.0}}))")
    path = make_study(tmp_path, seeds=[0, 1], notebook=str(notebook),
                      rows=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
                      variants=[{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}}],
                      columns=[{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"}])
    out = tmp_path / "out"
    held = RunFolder(out / "runs/b-gap-s0")
    held.lock()  # as a second runner training b-gap-s0 would hold it
    try:
        assert st.run_study(st.load_study(path), out, table=False) == {}
    finally:
        held.unlock()
    order = (out / "runs/order").read_text().split()
    assert order == ["a-gap-s0", "c-gap-s0", "a-gap-s1", "b-gap-s1", "c-gap-s1"]  # seed-major; b-s0 left alone
    assert not (out / "runs/b-gap-s0/summary.json").exists()
    assert "skipping b-gap-s0: in use by pid" in capsys.readouterr().out


def test_only_that_matches_no_run_is_an_error_and_writes_nothing(tmp_path):
    path = make_study(tmp_path, seeds=[0])
    out = tmp_path / "out"
    assert st.main([str(path), "--out", str(out), "--only", "nope-*"]) == 2
    assert not out.exists()
    assert st.main([str(path), "--out", str(out), "--only", "nope-*", "--dry-run"]) == 2


def test_run_records_keep_text_outputs_and_drop_images(tmp_path):
    notebook = notebook_of(tmp_path / "train.ipynb",
                           "import io\nfrom PIL import Image\nfrom IPython.display import display, Image as Png\n"
                           "buffer = io.BytesIO(); Image.new('RGB', (4, 4)).save(buffer, 'PNG')\n"
                           "display(Png(data=buffer.getvalue())); print('loss 0.5')\n"
                           "(run / 'summary.json').write_text(json.dumps({'finished': True, 'final': {'gap_top1': 5.0}}))")
    path = make_study(tmp_path, seeds=[0], notebook=str(notebook), rows=[{"name": "a"}],
                      variants=[{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}}],
                      columns=[{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"}])
    assert st.run_study(st.load_study(path), tmp_path / "out", table=False) == {}
    nb = nbformat.read(str(tmp_path / "out/runs/a-gap-s0/train.ipynb"), as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [k for o in outputs for k in o.get("data", {}) if k.startswith("image/")]
    assert any(o.get("data", {}).get("text/plain") == STRIPPED for o in outputs)
    assert any("loss 0.5" in o.get("text", "") for o in outputs)


def test_finished_run_with_changed_params_is_stale_and_reported(tmp_path):
    notebook = stand_in_notebook(tmp_path / "train.ipynb")
    path = make_study(tmp_path, seeds=[0], notebook=str(notebook), rows=[{"name": "a"}],
                      variants=[{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}}],
                      columns=[{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"}])
    study = st.load_study(path)
    run = st.expand(study)[0]
    runs_dir = tmp_path / "out/runs"
    fake_run(runs_dir, run.name, {"gap_top1": 1.0})
    saved = make_config(path, run.overrides + ["optim.lr=0.123", "train.device=cuda"]).to_dict()
    (runs_dir / run.name / "config.yaml").write_text(yaml.safe_dump(saved))
    assert st.changed_keys(study, run, runs_dir) == ["optim.lr"]  # device: an execution setting
    assert st.run_status(study, run, runs_dir) == "stale"
    failures = st.run_study(study, tmp_path / "out", table=False)
    assert "optim.lr" in failures[run.name] and not (runs_dir / run.name / "executed").exists()
    assert st.collect(study, tmp_path / "out").status.tolist() == ["stale"]  # not in the table


def test_unknown_notebook_parameter_is_a_failure(tmp_path):
    notebook = stand_in_notebook(tmp_path / "train.ipynb")
    error = st.execute(notebook, tmp_path / "x.ipynb", {"NOPE": 1})
    assert "NOPE" in error and not (tmp_path / "x.ipynb").exists()


def test_clean_notebook_strips_execution_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"duration": 1.0}, "widgets": {},
                                            "language_info": {"name": "python", "version": "3.11.9"}})
    cell = nbformat.v4.new_code_cell("1")
    cell.metadata.update({"papermill": {"duration": 0.1}, "execution": {"iopub.status.busy": "x"},
                          "tags": ["parameters"]})
    printed = nbformat.v4.new_code_cell("print(...)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="a\n"), nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output("stream", name="stderr", text="w\n"), nbformat.v4.new_output("stream", name="stdout", text="c\n")])
    nb.cells = [cell, printed]
    nbformat.write(nb, str(tmp_path / "n.ipynb"))
    st.clean_notebook(tmp_path / "n.ipynb")
    clean = nbformat.read(str(tmp_path / "n.ipynb"), as_version=4)
    assert dict(clean.metadata) == {"language_info": {"name": "python"}}
    assert dict(clean.cells[0].metadata) == {"tags": ["parameters"]}
    # where the kernel's buffer flushed does not show: one stream per run of prints
    assert [(o.name, o.text) for o in clean.cells[1].outputs] == [("stdout", "a\nb\n"), ("stderr", "w\n"), ("stdout", "c\n")]


def test_regenerating_a_report_from_unchanged_records_changes_no_file(tmp_path):
    path = make_study(tmp_path, seeds=[0], comparisons=[{"label": "B − A", "a": "b.gap_top1", "b": "a.gap_top1",
                                                         "variant": "gap"}])
    for row, value in (("a", 90.0), ("b", 91.0)):
        for variant in ("gap", "saol"):
            fake_run(tmp_path / "out/runs", f"{row}-{variant}-s0", {"gap_top1": value, "saol_top1": value},
                     [{"epoch": 1, "train_loss": 1.0, "gap_top1": value}])
    study = st.load_study(path)
    assert st.run_study(study, tmp_path / "out", train=False) == {}
    first = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert st.run_study(study, tmp_path / "out", train=False) == {}
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == first
    assert {"results.png", "curves.png"} <= {p.name for p in (tmp_path / "out/figures").glob("*.png")}
    for folder in (tmp_path / "out/runs").iterdir():   # every run superseded: no figure of them may stay
        shutil.rmtree(folder)
    assert st.run_study(study, tmp_path / "out", train=False) == {}
    assert not list((tmp_path / "out/figures").glob("*.png"))
    assert "0/4 runs finished" in (tmp_path / "out/README.md").read_text()


def test_committed_notebooks_are_clean_and_parameterized():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert "papermill" not in nb.metadata, path.name
        assert all("papermill" not in c.metadata and "execution" not in c.metadata for c in nb.cells), path.name
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code.metadata.get("tags") == ["parameters"], path.name
        names = st.runner.notebook_parameters(path)
        assert names and all(n.isupper() for n in names), path.name


def test_rows_may_run_a_subset_of_the_seeds():
    study = st.load_study("params/cifar10_resnet20.yaml")
    runs = st.expand(study)
    assert len(runs) == 4 * 5 + 6 * 3 + 5 + 2 + 5  # main rows 5 seeds; precision check, ablations 3; GPU replicates
    assert {r.seed for r in runs if r.row == "saol_ce"} == {0, 1, 2}
    assert {r.seed for r in runs if r.row == "saol_gpu"} == {3, 4}
    smoke = st.expand(st.load_study("params/smoke/cifar10_resnet20.yaml"))
    assert len(smoke) == 12 and {r.seed for r in smoke} == {0}  # saol_gpu has no seed 0


def test_comparisons_pair_seeds_and_references_show_beside_ours(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1, 2], papers={"R-110": {"a": [90.0, 91.0]}, "WRN": {"a": [94.0, 95.0]}},
                      comparisons=[{"label": "SAOL − GAP", "a": "a.saol_top1", "b": "a.gap_top1",
                                    "paper": {"R-110": 1.0, "WRN": 1.0}, "variant": "saol"},
                                   {"label": "B − A", "a": "b.saol_top1", "b": "a.saol_top1", "variant": "saol"}])
    study = st.load_study(path)
    runs_dir = tmp_path / "out/runs"
    for seed, (gap, saol, b) in enumerate([(90.0, 91.0, 91.0), (91.0, 92.5, 91.0), (92.0, 92.9, 91.0)]):
        fake_run(runs_dir, f"a-saol-s{seed}", {"saol_top1": saol, "gap_top1": gap})
        fake_run(runs_dir, f"b-saol-s{seed}", {"saol_top1": b, "gap_top1": 0.0})
    results = st.collect(study, tmp_path / "out")
    assert results.notebook.isna().all()        # no executed notebooks (e.g. --only): the report still works
    table = st.comparisons(study, results).set_index("comparison")
    assert table.loc["SAOL − GAP", "n"] == 3 and table.loc["SAOL − GAP", "mean"] == pytest.approx(1.1333333)
    assert table.loc["SAOL − GAP", "verdict"] == "reproduced"   # differences 1.0, 1.5, 0.9: all > 0
    assert table.loc["B − A", "verdict"] == "no difference seen"  # no paper number; 0, -1.5, -1.9
    md = st.table_markdown(study, st.summarize(study, results))
    assert md.splitlines()[0] == "| Model | GAP-FC | paper R-110 | paper WRN | SAOL | paper R-110 | paper WRN |"
    assert "| Row A | — | 90.00 | 94.00 | 92.13 ± 1.00 [n=3] | 91.00 (+1.00) | 95.00 |" in md
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert ("| SAOL − GAP | +1.13 [+0.33, +1.93] (n=3) | 0.80 | reproduced | cpu AVX512 · bfloat16 · torch 2.13 "
            "| +1.00 | +1.00 |") in report
    assert "*reproduced* = the interval contains the paper's Δ" in report and "*no difference seen* = " in report
    assert "*contradicted*" not in report   # the legend defines the words the table uses
    head = report.split("Source:")[0]        # the report opens with one line per main comparison
    assert ("- SAOL − GAP: +1.13 [+0.33, +1.93], **reproduced** (n=3, cpu AVX512 · bfloat16 · torch 2.13; "
            "paper +1.00 R-110, +1.00 WRN)") in head and "B − A" not in head   # no paper number: not a headline
    assert "Smoke run: not a result" not in report
    assert "no correction for the 2 intervals in this table" in report and "about 0.1 of them" in report
    import matplotlib.colors as mcolors
    from saol_core import viz
    ax = viz.comparisons_plot(table.reset_index()).axes[0]
    (lo, y0), (hi, y1) = ax.containers[0].lines[2][0].get_segments()[0]
    assert (lo, hi, y0, y1) == pytest.approx((table.loc["SAOL − GAP", "lo"], table.loc["SAOL − GAP", "hi"], 0, 0))
    assert mcolors.same_color(ax.containers[0].lines[0].get_color(), "C2")      # reproduced
    assert mcolors.same_color(ax.containers[1].lines[0].get_color(), "0.65")    # no paper number, holds 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["SAOL − GAP (n=3)", "B − A (n=3)"]
    from matplotlib.collections import PathCollection
    paper = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]  # per reference: (Δ, row)
    assert [np.ma.compress_rows(np.ma.masked_invalid(p)).tolist() for p in paper] == [[[1.0, 0.0]], [[1.0, 0.0]]]
    assert "--table-only" in report


def test_comparisons_pair_only_runs_of_one_hardware_class(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1, 2, 3, 4], paper={"a": [90.0, 91.0]},
                      comparisons=[{"label": "SAOL − GAP", "a": "a.saol_top1", "b": "a.gap_top1",
                                    "paper": {"paper": 0.5}, "variant": "saol"},
                                   {"label": "B − A", "a": "b.saol_top1", "b": "a.saol_top1", "variant": "saol"},
                                   {"label": "bf16 − fp32", "a": "b.saol_top1", "b": "a.saol_top1", "variant": "saol",
                                    "across": "precision"},
                                   {"label": "GPU − CPU", "a": "b.saol_top1", "b": "a.saol_top1", "variant": "saol",
                                    "across": "hardware"}])
    study = st.load_study(path)
    runs_dir = tmp_path / "out/runs"
    intel = {**CPU, "cpu": "Intel(R) Xeon(R) Processor"}
    gpu = {**CPU, "gpu": "NVIDIA H200"}
    old = {k: v for k, v in CPU.items() if k != "cpu_capability"}   # a record from before the ISA was kept
    a_runs = [dict(hardware=CPU), dict(hardware=intel), dict(hardware=CPU), dict(device="cuda:0", hardware=gpu),
              dict(hardware=old)]
    for seed, kw in enumerate(a_runs):
        fake_run(runs_dir, f"a-saol-s{seed}", {"saol_top1": 91.0 + seed, "gap_top1": 90.0 + seed * 1.1}, **kw)
    for seed in range(5):   # row b: all fp32 on the AMD CPU
        fake_run(runs_dir, f"b-saol-s{seed}", {"saol_top1": 90.0 + seed * 0.9}, amp="fp32")
    results = st.collect(study, tmp_path / "out")
    assert pd.isna(results.set_index("run").loc["a-saol-s4", "hw_class"])
    table = st.comparisons(study, results)
    cpu, h200 = "cpu AVX512 · bfloat16 · torch 2.13", "cuda NVIDIA H200 · bfloat16 · torch 2.13"
    within = table[table.comparison == "SAOL − GAP"].set_index("hw_class")
    assert list(within.index) == [cpu, h200]          # one line per class, the larger first
    assert within.loc[cpu, "n"] == 3 and within.loc[cpu, "vendors"] == "AMD, Intel"
    assert within.loc[cpu, "mean"] == pytest.approx(np.mean([1.0, 0.9, 0.8]))
    assert within.loc[h200, "verdict"] == "too few seeds" and within.loc[cpu, "cross_class"] == 1   # the old record
    # bf16 (row a) against fp32 (row b): never paired, unless the comparison is a precision check
    plain = table[table.comparison == "B − A"].iloc[0]
    assert (plain.n, plain.verdict, plain.cross_class) == (0, "no same-class pair", 5)
    precision = table[table.comparison == "bf16 − fp32"].iloc[0]
    assert (precision.hw_class, precision.n, precision.cross_class) == ("cpu AVX512 · torch 2.13", 3, 2)
    hardware = table[table.comparison == "GPU − CPU"]
    assert hardware.hw_class.tolist() == [] or (hardware.n == 0).all()   # amp differs: no hardware-check pair
    md = st.comparisons_markdown(study, table)
    assert "CPU vendors differ: AMD, Intel; 1 seed(s) on different classes left out" in md
    assert "| B − A | — | — | no same-class pair | — (5 seed(s) on different classes left out) |" in md


def test_a_study_pinned_to_a_hardware_class_refuses_another_machine(tmp_path):
    from saol_core.study.runner import check, machine_class
    here = machine_class(make_config(ROOT / "params/default.yaml"))
    assert here.startswith("cpu ") and here.endswith(" · torch " + ".".join(torch_version().split(".")[:2]))
    study = st.load_study(make_study(tmp_path, seeds=[0], hardware="cuda NVIDIA H200 · *"))
    with pytest.raises(ConfigError, match=r"this machine's hardware class is cpu .* but the study pins cuda NVIDIA H200"):
        check(study, st.expand(study), tmp_path / "runs")
    check(st.load_study(make_study(tmp_path, seeds=[0], hardware=["cuda *", "cpu *"])), st.expand(study), tmp_path / "runs")
    pinned = str(make_study(tmp_path, seeds=[0], hardware="cuda NVIDIA H200 · *"))
    assert st.main([pinned, "--dry-run", "--out", str(tmp_path / "gpu")]) == 2          # refused here
    assert st.main([pinned, "--dry-run", "--out", str(tmp_path / "cpu"), "--hardware", "cpu *"]) == 0
    assert st.main([pinned, "--dry-run", "--hardware", "cpu *"]) == 2                   # never into the pinned folder
    with pytest.raises(ConfigError, match="study.hardware must be a hardware-class pattern"):
        st.load_study(make_study(tmp_path, hardware=3))


def torch_version() -> str:
    import torch
    return torch.__version__


def test_smoke_reports_say_they_are_not_results(tmp_path):
    study = st.load_study("params/smoke/cifar10_resnet20.yaml")
    results = st.collect(study, tmp_path / "out")
    text = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert text.splitlines()[2].startswith("> **Smoke run: not a result.**")


def test_budgets_put_the_headline_comparisons_of_two_studies_side_by_side(tmp_path):
    comparison = [{"label": "SAOL − GAP", "a": "a.saol_top1", "b": "a.gap_top1", "paper": {"paper": 1.0},
                   "variant": "saol", "headline": True},
                  {"label": "B − A", "a": "b.saol_top1", "b": "a.saol_top1", "variant": "saol"}]
    for name, gains in (("short", [0.1, -0.2, 0.3]), ("long", [1.2, 0.8, 1.0])):
        (tmp_path / name).mkdir()
        make_study(tmp_path / name, seeds=[0, 1, 2], comparisons=comparison)
        for seed, gain in enumerate(gains):
            fake_run(tmp_path / name / "out/runs", f"a-saol-s{seed}", {"saol_top1": 90.0 + gain, "gap_top1": 90.0})
    path = make_study(tmp_path, seeds=[0], comparisons=comparison, budgets={
        "15 epochs": {"params": str(tmp_path / "short/study.yaml"), "out": str(tmp_path / "short/out")},
        "100 epochs": {"params": str(tmp_path / "long/study.yaml"), "out": str(tmp_path / "long/out")}})
    table = st.budget_comparisons(st.load_study(path))
    assert table.comparison.tolist() == ["SAOL − GAP"] * 2 and table.budget.tolist() == ["15 epochs", "100 epochs"]
    assert table["mean"].tolist() == pytest.approx([0.0667, 1.0], abs=1e-4)
    assert table.verdict.tolist() == ["smaller than the paper's", "reproduced"]
    from saol_core import viz
    ax = viz.budget_plot(table).axes[0]
    (x0, lo), (x1, hi) = ax.containers[1].lines[2][0].get_segments()[0]   # the 100-epoch bar
    assert (x0, lo, hi) == pytest.approx((1.0, table["lo"][1], table["hi"][1]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["15 epochs", "100 epochs"]
    with pytest.raises(ConfigError, match="study.budgets.*names .*nope.yaml, which does not exist"):
        st.load_study(make_study(tmp_path, budgets={"x": "nope.yaml"}))


def test_every_verdict_word_is_drawn_in_its_own_style():
    import matplotlib.colors as mcolors
    from saol_core import viz
    from saol_core.study.stats import VERDICTS
    styles = {v: viz.verdict_style(v) for v in VERDICTS}
    drawn = {(mcolors.to_hex(s["color"]), mcolors.to_hex(s["mfc"])) for s in styles.values()}
    assert len(drawn) == len(VERDICTS)     # a legend entry per word, none two alike
    assert styles["too few seeds"]["mfc"] == "white" != styles["inconclusive"]["mfc"]


def test_comparison_paper_deltas_match_the_transcribed_cells():
    study = st.load_study("params/cifar10_resnet20.yaml")
    column = {c.metric[0]: j for j, c in enumerate(study.columns)}
    checked = 0
    for c in study.comparisons:
        for ref, delta in c.paper.items():
            table = study.papers.get(ref, {})
            (ra, ma), (rb, mb) = c.a, c.b
            if ra in table and rb in table and table[ra][column[ma]][0] is not None:
                assert round(table[ra][column[ma]][0] - table[rb][column[mb]][0], 2) == delta, (c.label, ref)
                checked += 1
    assert checked >= 12


def sleeping_notebook(path: Path) -> Path:
    """Records its kernel's pid, then trains "for hours"."""
    return notebook_of(path, "(run / 'pid').write_text(str(os.getpid()))\ntime.sleep(3600)")


@pytest.mark.slow
def test_one_ctrl_c_stops_the_kernels_and_says_how_to_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    path = make_study(tmp_path, seeds=[0, 1], notebook=str(sleeping_notebook(tmp_path / "train.ipynb")),
                      rows=[{"name": "a"}], variants=[{"name": "gap", "set": {"model.heads": "gap", "loss.w_sd": 0.0}}],
                      columns=[{"label": "GAP-FC", "variant": "gap", "metric": "gap_top1"}])
    out = tmp_path / "out"
    # SIG_DFL in the child: a shell's background job (nohup ... &) starts with SIGINT ignored, and Python
    # then rightly leaves it ignored; this test is about what a terminal's Ctrl-C does
    proc = subprocess.Popen([sys.executable, "-m", "saol_core.study", str(path), "--out", str(out), "--jobs", "2",
                             "--only", "a-*", "--set", "train.threads=1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids = [out / f"runs/a-gap-s{s}/pid" for s in (0, 1)]
    try:
        deadline = time.time() + 120
        while not all(p.exists() for p in pids) and time.time() < deadline:
            time.sleep(0.5)
        assert all(p.exists() for p in pids), proc.stderr.read() if proc.poll() is not None else "no kernels started"
        time.sleep(1)
        started = time.time()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert time.time() - started < 30 and proc.returncode == 130
        # the command as started, selection and overrides included
        assert (f"Resume with: python -m saol_core.study {path} --out {out} --only 'a-*' --set train.threads=1 "
                f"--jobs 2\n") in err and "Traceback" not in err
        for p in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(int(p.read_text()), 0)
    finally:  # a failure leaves no runner or sleeping kernel behind
        proc.kill()
        for p in pids:
            if p.exists():
                try:
                    os.kill(int(p.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_cell_of_a_metric_list_shows_the_metrics_a_row_has(tmp_path):
    """A GAP-FC run has CAM's numbers but no SAOL's: its "SAOL / CAM" cells show "— / CAM" (not "—")."""
    study = st.load_study(ROOT / "params/smoke/wsol_cub50.yaml")
    runs_dir = tmp_path / "out/runs"
    fake_run(runs_dir, "gap-run-s0", {"cam_top1_loc": 40.0, "gap_top1": 70.0})
    fake_run(runs_dir, "saol_cm-run-s0", {"saol_top1_loc": 45.0, "cam_top1_loc": 41.0, "saol_top1": 72.0,
                                          "gap_top1": 71.0})
    results = st.collect(study, tmp_path / "out")
    md = st.table_markdown(study, st.summarize(study, results))
    # the figure draws every metric of a column, not only the first
    from saol_core import viz
    fig = viz.results_plot(st.summarize(study, results), results)
    drawn = {float(x) for ax in fig.axes[:1] for c in ax.collections for x in np.asarray(c.get_offsets())[:, 0]}
    assert {40.0, 41.0, 45.0} <= drawn
    # ours span 40-45 (reach 5 points): the paper's 49.41 is drawn where it is, 52.39 and 54.81 sit at the
    # right edge, inside the axis, with their values printed
    left, right = fig.axes[0].get_xlim()
    assert 49.41 in drawn and left < 40.0 and 49.41 < right < 52.39
    assert {t.get_text() for t in fig.axes[0].texts} == {"52.4", "54.8"}
    pad = 0.06 * (49.41 - 40.0)
    margin = 0.18 * (49.41 - 40.0 + 2 * pad)
    assert right == pytest.approx(49.41 + pad + margin) and left == pytest.approx(40.0 - pad)
    assert {round(x, 6) for x in drawn if x > 49.41} == {round(right - 0.15 * margin, 6)}
    gap = next(line for line in md.splitlines() if line.startswith("| GAP-FC → CAM |"))
    assert gap.split(" | ")[1:3] == ["— / 40.00 [n=1]", "— / 49.41"]
    saol = next(line for line in md.splitlines() if line.startswith("| SAOL + CutMix (+"))
    assert saol.split(" | ")[1:3] == ["45.00 / 41.00 [n=1]", "52.39 / —"]


def test_report_accounts_run_time_per_device(tmp_path):
    study = st.load_study(make_study(tmp_path, seeds=[0]))
    runs_dir = tmp_path / "out/runs"
    cpu = {"cpu": "AMD EPYC", "cpu_count": 2, "cpu_capability": "AVX2", "torch_threads": 2}
    gpu = {"cpu": "Intel(R) Xeon(R)", "cpu_count": 16, "torch_threads": 1, "gpu": "NVIDIA H200"}
    fake_run(runs_dir, "a-gap-s0", {"gap_top1": 1.0}, wall_time_s=3600.0, device="cpu", hardware=cpu, amp="fp32")
    fake_run(runs_dir, "a-saol-s0", {"gap_top1": 1.0}, wall_time_s=1800.0, device="cuda:0", hardware=gpu, amp="bf16")
    fake_run(runs_dir, "b-gap-s0", {"gap_top1": 1.0}, wall_time_s=900.0, device="cuda", hardware=gpu, amp="bf16")
    results = st.collect(study, tmp_path / "out")
    text = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert ("3/4 runs finished on AMD EPYC (2 cores, AVX2), cpu, 2 thread(s), fp32: 1 run; Intel Xeon (16 cores) + "
            "NVIDIA H200, cuda, 1 thread(s), bf16: 2 runs; 1.75 h of run wall time: 1.00 h in 1 cpu run (2.00 thread-hours), 0.75 h in "
            "2 cuda runs.") in text
    assert "| `a-saol-s0` | finished | cuda NVIDIA H200 · bf16 · torch 2.13 | — | 1800.00 |" in text
    assert "| `a-gap-s0` | finished | cpu AVX2 · fp32 · torch 2.13 | AMD | 3600.00 |" in text
    assert "| `b-saol-s0` | new | — | — | — |" in text


def test_figures_name_metrics_and_rows_as_a_reader_does():
    from saol_core import viz
    assert viz.metric_label("saol_top1_loc") == "SAOL Top-1 Loc (%)"
    assert viz.metric_label("cam_max_box_acc_v2") == "CAM MaxBoxAccV2 (%)"
    assert viz.metric_label("gap_top1") == "GAP-FC top-1 (%)" and viz.metric_label("top5") == "top-5 (%)"
    assert viz.metric_label("center_gt_known_loc") == "centre Gaussian GT-known Loc (%)"
    assert viz.metric_label("center_top1_loc_cam") == "centre box, CAM's class: Top-1 Loc (%)"
    assert viz.metric_label("saol_gmacs") == "SAOL GMACs" and viz.metric_label("wsol_time_s") == "wsol_time_s"
    history = [{"run": f"{row}-s{s}", "row": row, "variant": "c10", "seed": s, "epoch": e,
                "train_loss": loss / e, "gap_top1": top1 * e}
               for row, loss, top1 in (("gap", 2.0, 20.0), ("full", 4.0, 10.0), ("saol", 1.0, 5.0)) for s in (0, 1)
               for e in (1, 2, 3)]
    fig = viz.training_curves(history, facet="row", labels={"gap": "GAP-FC", "full": "SAOL + CutMix + L_SS1"})
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 6 and len(fig.axes) == 8   # 3 rows x (loss, top-1), two rows per line
    losses, accs = shown[0::2], shown[1::2]
    assert len({ax.get_ylim() for ax in losses}) == 1 and len({ax.get_ylim() for ax in accs}) == 1   # shared ranges
    assert losses[0].get_ylim()[1] >= 4.0 and accs[0].get_ylim()[1] >= 60.0
    titles = [ax.get_title() for ax in losses]
    assert titles[0].startswith("GAP-FC\n") and titles[1].startswith("SAOL + CutMix + L_SS1\n")
    assert titles[2].startswith("saol\n")   # no label given: the key itself
    assert accs[0].get_title() == "GAP-FC\ntest top-1 of each head"
    # a recipe study evaluates held-out training images, and its curves say so
    recipe = st.load_study(ROOT / "params/wsol_cub50_recipe.yaml")
    assert st.evaluated_split(recipe) == "held-out train"
    assert st.evaluated_split(st.load_study(ROOT / "params/wsol_cub50.yaml")) == "test"
    fig = viz.training_curves(history, facet="row", split=st.evaluated_split(recipe))
    assert fig.axes[1].get_title() == "gap\nheld-out train top-1 of each head"


def test_wide_tables_are_split_and_columns_without_a_paper_number_left_out(tmp_path):
    columns = [{"label": f"metric {k}", "variant": "gap", "metric": "gap_top1"} for k in range(7)]
    path = make_study(tmp_path, seeds=[0], columns=columns,
                      papers={"R-110": {"a": [90.0, None, None, None, None, None, 91.0]},
                              "WRN": {"a": [94.0, None, None, None, None, None, None]}})
    study = st.load_study(path)
    fake_run(tmp_path / "out/runs", "a-gap-s0", {"gap_top1": 1.0})
    md = st.table_markdown(study, st.summarize(study, st.collect(study, tmp_path / "out")))
    heads = [block.splitlines()[0] for block in md.split("\n\n")]
    assert all(h.count("|") - 1 <= 10 for h in heads) and len(heads) == 2
    assert heads[0] == ("| Model | metric 0 | paper R-110 | paper WRN | metric 1 | metric 2 | metric 3 | metric 4 "
                        "| metric 5 |")
    assert heads[1] == "| Model | metric 6 | paper R-110 |"
    assert all(block.splitlines()[2].startswith("| Row A |") for block in md.split("\n\n"))


def test_localization_comparisons_say_when_a_side_is_below_the_no_model_baseline(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1, 2],
                      comparisons=[{"label": "GT-known: SAOL − CAM", "a": "a.saol_gt_known_loc",
                                    "b": "a.cam_gt_known_loc", "paper": {"paper": -2.0}, "variant": "saol"},
                                   {"label": "Top-1 Loc: SAOL − CAM", "a": "a.saol_top1_loc",
                                    "b": "a.cam_top1_loc", "variant": "saol"}])
    study = st.load_study(path)
    for seed in range(3):   # SAOL 50-52 under the centre Gaussian's 57.5, CAM 60-62 above it
        fake_run(tmp_path / "out/runs", f"a-saol-s{seed}",
                 {"saol_gt_known_loc": 50.0 + seed, "cam_gt_known_loc": 60.0 + seed * 1.2, "center_gt_known_loc": 57.5,
                  "saol_top1_loc": 30.0 + seed, "cam_top1_loc": 31.0, "center_top1_loc": 0.0,
                  # Top-1 Loc's baseline: the centred box judged with each side's own head
                  "center_top1_loc_saol": 29.0 + seed, "center_top1_loc_cam": 33.0})
    table = st.comparisons(study, st.collect(study, tmp_path / "out")).set_index("comparison")
    gt = table.loc["GT-known: SAOL − CAM"]
    assert gt.a_baseline == gt.b_baseline == 57.5 and bool(gt.a_below_baseline) and not bool(gt.b_below_baseline)
    top1 = table.loc["Top-1 Loc: SAOL − CAM"]
    assert (top1.a_baseline, top1.b_baseline) == (30.0, 33.0)
    assert not bool(top1.a_below_baseline) and bool(top1.b_below_baseline)
    md = st.comparisons_markdown(study, table.reset_index())
    assert "| same direction, larger; SAOL below its no-model baseline (57.50) |" in md
    assert ("Top-1 Loc: SAOL − CAM | +0.00 [-2.48, +2.48] (n=3) | 2.48 | no difference seen; "
            "CAM below its no-model baseline (33.00) |") in md
    assert "*below its no-model baseline*" in st.verdict_legend(table)
    assert st.no_model_baseline("attention_max_box_acc_v2") == "center_max_box_acc_v2"
    assert st.no_model_baseline("cam_top1_loc") == "center_top1_loc_cam"
    assert st.no_model_baseline("saol_top1") is None and st.no_model_baseline("center_gt_known_loc") is None


def test_map_figures_keep_a_figure_only_while_its_run_is_in_the_report(tmp_path):
    import matplotlib.pyplot as plt
    from saol_core import localize, viz
    study = st.load_study(make_study(tmp_path, seeds=[0]))
    fake_run(tmp_path / "out/runs", "a-saol-s0", {"saol_top1": 50.0})
    figures = tmp_path / "out/figures"
    for name, source in (("fig5.png", "a-saol-s0"), ("boxes.png", "a-saol-s7")):   # s7: rerun, gone
        viz.save(plt.figure(), figures / name, source=source)
    shown = localize.map_figures(tmp_path / "out", st.collect(study, tmp_path / "out"))
    assert shown == {"Fig. 5-style maps of a-saol-s0": figures / "fig5.png"}
    assert not (figures / "boxes.png").exists()


def test_committed_tables_fit_a_reader_s_screen():
    """Every markdown table a reader opens first (README, params/README, each report's README) has at most 10
    columns and no cell over 300 characters: longer text belongs in the report's prose, not in a cell."""
    wide = []
    for doc in [ROOT / "README.md", ROOT / "params/README.md", *sorted((ROOT / "reports").glob("*/README.md"))]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("|") and set(line) - set("|-: "):
                cells = line.strip().strip("|").split("|")
                if len(cells) > 10 or max(map(len, cells)) > 300:
                    wide.append(f"{doc.relative_to(ROOT)}:{number}: {len(cells)} cells, longest {max(map(len, cells))}")
    assert not wide, "\n".join(wide)


def test_a_report_without_intervals_says_nothing_about_their_multiplicity(tmp_path):
    path = make_study(tmp_path, seeds=[0], comparisons=[{"label": "SAOL − GAP", "a": "a.saol_top1",
                                                         "b": "a.gap_top1", "variant": "saol"}])
    study = st.load_study(path)
    fake_run(tmp_path / "out/runs", "a-saol-s0", {"saol_top1": 91.0, "gap_top1": 90.0})
    results = st.collect(study, tmp_path / "out")
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert "| SAOL − GAP | +1.00 (n=1) | — | too few seeds |" in report and "no correction for" not in report


def test_the_project_readme_quotes_each_report_headline_and_run_count_as_the_report_holds_them(tmp_path, monkeypatch):
    from saol_core.study import report as rp
    readme = tmp_path / "README.md"
    stale = ["- SAOL − GAP: +9.99, **old** (n=1)"]
    text = "\n".join(["intro", "<!-- headline out -->", *stale, "<!-- /headline -->", "between",
                      "| out | <!-- runs out -->0 of 9<!-- /runs --> finished | <!-- runs other -->1 of 2<!-- /runs --> |",
                      "<!-- headline other -->", "- untouched", "<!-- /headline -->", "end", ""])
    readme.write_text(text)
    monkeypatch.setattr(rp, "ROOT", tmp_path)   # this README, and the report folder tmp_path/out is "out"
    path = make_study(tmp_path, seeds=[0], comparisons=[{"label": "SAOL − GAP", "a": "a.saol_top1",
                                                         "b": "a.gap_top1", "variant": "saol", "headline": True}])
    study = st.load_study(path)
    fake_run(tmp_path / "out/runs", "a-saol-s0", {"saol_top1": 91.0, "gap_top1": 90.0})
    results = st.collect(study, tmp_path / "out")
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    line = next(x for x in report.splitlines() if x.startswith("- SAOL − GAP: "))
    expected = text.replace(stale[0], line).replace("0 of 9", f"1 of {len(results)}")
    assert len(results) == 4 and readme.read_text() == expected   # rows a, b x two variants, seed 0
    assert "+1.00" in line and "too few seeds" in line
    assert not rp.update_readme_block("headline", "elsewhere", "\n- x\n", readme) and readme.read_text() == expected
    readme.write_text("<!-- headline out -->\n- a\n")
    with pytest.raises(ValueError, match="no `<!-- /headline -->`"):
        rp.update_readme_block("headline", "out", "\n- b\n", readme)


def test_curves_name_variants_in_the_study_order_and_keep_a_colour_per_variant():
    import matplotlib.colors as mcolors
    from saol_core import viz
    history = [{"run": f"saol-{v}-s{s}", "row": "saol", "variant": v, "seed": s, "epoch": e, "train_loss": 1.0 / e,
                "saol_top1": 10.0 * e + k, "gap_top1": 5.0 * e + k}
               for k, v in enumerate(("h30", "h3", "h10")) for s in (0, 1) for e in (1, 2)]
    study_order = {"h3": "heads at 3x", "h10": "heads at 10x", "h30": "heads at 30x"}
    ax_loss, ax_acc = viz.training_curves(history, facet="row", variants=study_order).axes
    names = list(study_order.values())
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == names
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()][1:4] == names   # then the head styles
    for ax in (ax_loss, ax_acc):   # a variant has one colour in both panels: C0 the study's first
        colours = {line.get_label(): line.get_color() for line in ax.get_legend().get_lines()}
        assert [mcolors.to_hex(colours[n]) for n in names] == [mcolors.to_hex(f"C{i}") for i in range(3)]
    solid, dashed = ax_acc.get_lines()[0], ax_acc.get_lines()[3]   # per variant: SAOL solid, GAP-FC dashed
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"


def test_plateau_table_says_what_the_last_quarter_of_training_added(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1], plateau=1.0)
    study = st.load_study(path)
    runs_dir = tmp_path / "out/runs"
    for seed, (at6, at8) in enumerate([(60.0, 60.5), (62.0, 63.5)]):   # gains 0.5 and 1.5: mean 1.0, not < 1
        curve = [{"epoch": e, "train_loss": 1.0, "gap_top1": 50.0 + e} for e in range(1, 6)]
        curve += [{"epoch": 6, "train_loss": 1.0, "gap_top1": at6}, {"epoch": 7, "train_loss": 1.0},
                  {"epoch": 8, "train_loss": 1.0, "gap_top1": at8}]
        fake_run(runs_dir, f"a-gap-s{seed}", {"gap_top1": at8}, curve)
        # SAOL evaluated every 3 epochs: its last evaluation within 3/4 of 8 epochs is epoch 6, then 9 -> 12
        fake_run(runs_dir, f"a-saol-s{seed}", {"saol_top1": 70.0}, [
            {"epoch": e, "train_loss": 1.0, "saol_top1": 70.0 - (e == 6) * 0.4, "gap_top1": 65.0}
            for e in (3, 6, 8)])
    results = st.collect(study, tmp_path / "out")
    table = st.plateaus(study, st.histories(tmp_path / "out", results[results.status == "finished"]))
    gap = table[(table.variant == "gap")].iloc[0]
    assert (gap.epochs, gap.n, gap.plateaued) == ("6 → 8", 2, False)
    assert (gap.start, gap.end, gap.gain) == pytest.approx((61.0, 62.0, 1.0))
    assert gap.gain_sd == pytest.approx(math.sqrt(0.5))
    saol = table[(table.variant == "saol") & (table["head"] == "SAOL")].iloc[0]
    assert saol.gain == pytest.approx(0.4) and bool(saol.plateaued)
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert "| Row A | gap | GAP-FC | 6 → 8 | 61.00 | 62.00 | +1.00 ± 0.71 | 2 | **no** |" in report
    assert "less than 1 points (`study.plateau`)" in report
    with pytest.raises(ConfigError, match="study.plateau must be a positive number"):
        st.load_study(make_study(tmp_path, plateau="soon"))


def test_a_comparison_says_which_side_s_head_has_not_plateaued(tmp_path):
    path = make_study(tmp_path, seeds=[0, 1], plateau=1.0, comparisons=[
        {"label": "GAP-FC: A − B", "a": "a.gap_top1", "b": "b.gap_top1", "variant": "gap", "headline": True},
        {"label": "SAOL − GAP-FC", "a": "a.saol_top1", "b": "a.gap_top1", "variant": "saol"}])
    study = st.load_study(path)
    runs_dir = tmp_path / "out/runs"
    for seed in (0, 1):
        for row, gain in (("a", 2.0 + 0.2 * seed), ("b", 0.2)):   # row a's GAP-FC head gains +2.1, b's +0.2
            curve = [{"epoch": e, "train_loss": 1.0, "gap_top1": 60.0} for e in (1, 3)]
            fake_run(runs_dir, f"{row}-gap-s{seed}", {"gap_top1": 60.0 + gain},
                     curve + [{"epoch": 4, "train_loss": 1.0, "gap_top1": 60.0 + gain}])
        # row a, SAOL variant: the SAOL head plateaued (+0.5), its GAP-FC head did not (+1.5)
        fake_run(runs_dir, f"a-saol-s{seed}", {"saol_top1": 70.5, "gap_top1": 61.5},
                 [{"epoch": 3, "train_loss": 1.0, "saol_top1": 70.0, "gap_top1": 60.0},
                  {"epoch": 4, "train_loss": 1.0, "saol_top1": 70.5, "gap_top1": 61.5}])
    results = st.collect(study, tmp_path / "out")
    plateau = st.plateaus(study, st.histories(tmp_path / "out", results[results.status == "finished"]))
    table = st.comparisons(study, results, plateau).set_index("comparison")
    assert table.loc["GAP-FC: A − B", "a_unplateaued_gain"] == pytest.approx(2.1)
    assert math.isnan(table.loc["GAP-FC: A − B", "b_unplateaued_gain"])
    assert math.isnan(table.loc["SAOL − GAP-FC", "a_unplateaued_gain"])
    assert table.loc["SAOL − GAP-FC", "b_unplateaued_gain"] == pytest.approx(1.5)
    assert "a_unplateaued_gain" not in st.comparisons(study, results)   # no plateau table: no claim either way
    report = st.write_report(study, tmp_path / "out", st.summarize(study, results), results, {}).read_text()
    assert "| differs; the head behind A has not plateaued (+2.10 in the last quarter) |" in report
    assert "| differs; the head behind GAP-FC has not plateaued (+1.50 in the last quarter) |" in report
    assert "*has not plateaued*: the head behind that side still gained" in report
    assert "- GAP-FC: A − B: +1.90 [+0.63, +3.17], **differs**; the head behind A has not plateaued (+2.10" in report


def test_curve_panel_titles_do_not_run_into_each_other():
    from saol_core import viz
    history = [{"run": f"{row}-s0", "row": row, "variant": "run", "seed": 0, "epoch": e, "train_loss": 1.0 / e,
                "saol_top1": 10.0 * e, "gap_top1": 9.0 * e} for row in ("gap", "full") for e in (1, 2)]
    label = "SAOL + CutMix + L_SS1 + L_SS2 + L_SD (+ SD GAP-FC → CAM)"   # the longest row label of a study
    fig = viz.training_curves(history, facet="row", labels={"gap": "GAP-FC → CAM", "full": label})
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    for left, right in zip(boxes, boxes[1:]):   # a clear gap (0.1 in), not titles that touch
        assert left.x1 + 0.1 * fig.dpi <= right.x0, (left, right)
