"""Notebook parameters as papermill users pass them: every parameters cell is readable by papermill,
overrides come in three forms, and an unknown parameter is an error naming the valid ones."""
import threading
import time

import nbformat
import pytest
from papermill.translators import PythonTranslator

from saol_core.config import ConfigError, make_config
from saol_core.notebook import as_overrides, check_parameters
from saol_core.study import runner
from saol_core.study import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_infers_every_parameter_of_every_notebook(path):
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    inferred = {p.name for p in PythonTranslator.inspect(cell)}
    assert inferred == runner.notebook_parameters(path.relative_to(ROOT)) and inferred


def test_overrides_as_mapping_list_or_one_string():
    expected = ["train.epochs=2", "model.mask_head=true", "optim.lr=0.05", "name=a b"]
    assert as_overrides({"train.epochs": 2, "model.mask_head": True, "optim.lr": 0.05, "name": "a b"}) == expected
    assert as_overrides(expected) == expected
    assert as_overrides("train.epochs=2 model.mask_head=true optim.lr=0.05 'name=a b'") == expected
    assert make_config(None, as_overrides("train.epochs=1")).train.epochs == 1
    assert as_overrides(None) == [] and as_overrides({}) == []
    with pytest.raises(ConfigError, match="overrides must be"):
        as_overrides(3)


def test_unknown_parameters_of_any_case_and_wrong_types_are_refused():
    import os
    from pathlib import Path as P
    names = {"PARAMS": str, "OUT_DIR": str, "RESUME": bool}
    ok = {"PARAMS": "p", "OUT_DIR": "o", "RESUME": True, "In": [], "_": None, "os": os, "P": P, "print": print}
    check_parameters(ok, names)   # imports (modules, classes, functions) and the kernel's names are not parameters
    for extra in ({"EPOCHS": 1}, {"epochs": 1}, {"Out_Dir": "x"}):
        with pytest.raises(ConfigError, match=rf"\['{next(iter(extra))}'\].*\['OUT_DIR', 'PARAMS', 'RESUME'\]"):
            check_parameters({**ok, **extra}, names)
    with pytest.raises(ConfigError, match="notebook parameter RESUME='maybe' must be bool"):
        check_parameters({**ok, "RESUME": "maybe"}, names)
    with pytest.raises(ConfigError, match="STEPS=True must be int"):
        check_parameters({"STEPS": True}, {"STEPS": int})
    check_parameters({"X": None}, {"X": (int, type(None))})


def test_papermill_with_a_lower_case_parameter_fails_in_the_notebook(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="unknown notebook parameter.*'out_dir'"):
        pm.execute_notebook(str(ROOT / "notebooks/02_table.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"out_dir": str(tmp_path)}, cwd=str(ROOT / "notebooks"), progress_bar=False)


def test_the_study_prints_each_epoch_of_the_runs_in_flight(tmp_path, capsys):
    (tmp_path / "a-s0").mkdir()
    metrics = tmp_path / "a-s0/metrics.jsonl"
    metrics.write_text('{"epoch": 1, "train_loss": 2.5, "images_per_s": 100.0}\n')
    done = threading.Event()
    watcher = threading.Thread(target=runner._report_epochs, args=(tmp_path, {"a-s0": 3}, done, set(), 0.05))
    watcher.start()
    time.sleep(0.3)
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_loss": 2.0, "images_per_s": 90.0, "saol_top1": 41.0}\n')
    done.set()                       # the last line is printed even when the run ends between two polls
    watcher.join()
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[study]")]
    assert lines == ["[study] a-s0: epoch 1/3 loss 2.500 100 img/s",
                     "[study] a-s0: epoch 2/3 loss 2.000 90 img/s saol_top1=41.00"]


def test_the_repository_names_no_path_of_a_development_machine():
    """Tracked files (code, params, notebooks, reports) must not point at the machine they were made on."""
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    needles = [str(ROOT) + "/", "/work/", "/home/", "/root/", "../shared"]
    hits = []
    for name in files:
        path = ROOT / name
        if name.startswith("tests/") or not path.is_file() or path.suffix in (".png", ".pt", ".npy"):
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{name}: {n}" for n in needles if n in text]
    assert not hits, hits
