"""Executing a study: one papermill run of the training notebook per grid cell (skipping finished runs,
resuming partial ones, reporting failures and going on), then the table notebook; and the CLI.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import signal
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import ConfigError, make_config
from ..runs import RecordCorrupt
from .spec import ROOT, Run, Study, changed_keys, default_out, expand, load_study, project_path, run_status


def notebook_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import nbformat
    nb = nbformat.read(str(project_path(notebook)), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=", cells[0].source, re.M)) if cells else set()


def execute(notebook: str | Path, output: Path, parameters: dict) -> str | None:
    """Run a notebook with papermill (cwd = project root); None, or a one-paragraph failure report."""
    import papermill as pm
    unknown = set(parameters) - notebook_parameters(notebook)
    if unknown:
        return f"{notebook} has no parameter(s) {sorted(unknown)} in its cell tagged 'parameters'"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(project_path(notebook)), str(project_path(output)), parameters=parameters,
                            cwd=str(ROOT), progress_bar=False, log_output=False)
        _relative_paths(project_path(output))
    except pm.PapermillExecutionError as e:
        _relative_paths(project_path(output))
        import nbformat
        failed = [c for c in nbformat.read(str(project_path(output)), as_version=4).cells
                  if c.get("execution_count") == e.exec_count and c.source.strip()]
        first_line = failed[0].source.strip().splitlines()[0] if failed else "?"
        return f"{e.ename}: {e.evalue}\n    notebook {output}, failing cell In [{e.exec_count}]: {first_line}"
    except Exception as e:  # kernel died, notebook missing, ...: report it and go on with the others
        return f"{type(e).__name__}: {e}\n    notebook {output}"
    return None


STRIPPED = "[figure not kept in the run record: the study's report draws its figures from the records]"


def strip_images(path: str | Path) -> int:
    """Replace the images in an executed run notebook's outputs by a one-line note (text outputs stay): a
    record keeps what its figures were drawn from, not megabytes of PNG. Returns how many it replaced."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    replaced = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images = [k for k in data if k.startswith("image/")]
            if images:
                for k in images:
                    del data[k]
                data["text/plain"] = STRIPPED
                replaced += 1
    if replaced:
        nbformat.write(nb, str(path))
    return replaced


class StudyInterrupted(RuntimeError):
    """Ctrl-C during a study: the kernels were stopped; the message says how to resume."""


def _stop_kernels() -> int:
    """Kill the kernel processes this process started (papermill gives each its own session, so a
    terminal's Ctrl-C does not reach them). Linux: found through /proc; elsewhere none are found."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(stat.parent.name))
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)  # a training kernel resumes from its checkpoint: nothing to save
        except ProcessLookupError:
            pass
    return len(children)


def _report_epochs(runs_dir: Path, in_flight: dict[str, int], done: threading.Event,
                   ended: set[str] = frozenset(), every: float = 10.0) -> None:
    """Print one line per finished epoch of the runs in flight (their notebooks' output is not shown),
    read from each run folder's metrics.jsonl; a run in ``ended`` gets its last lines, then is dropped."""
    from tqdm.auto import tqdm
    seen: dict[str, int] = {}
    while True:
        stop = done.wait(every)
        for name, epochs in list(in_flight.items()):
            path = runs_dir / name / "metrics.jsonl"
            try:
                lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            except (OSError, ValueError):
                continue
            for row in lines[seen.get(name, 0):]:
                acc = " ".join(f"{k}={row[k]:.2f}" for k in ("saol_top1", "gap_top1") if k in row)
                tqdm.write(f"[study] {name}: epoch {row['epoch']}/{epochs} loss {row['train_loss']:.3f} "
                           f"{row.get('images_per_s', 0):.0f} img/s {acc}".rstrip())
            seen[name] = len(lines)
            if name in ended:
                in_flight.pop(name, None)
        if stop:
            return


def _relative_paths(path: Path) -> None:
    """papermill records the notebook's absolute input and output paths; keep them project-relative so
    that an executed notebook says nothing about the machine it ran on."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key) and Path(meta[key]).is_absolute() and Path(meta[key]).is_relative_to(ROOT):
            meta[key] = str(Path(meta[key]).relative_to(ROOT))
    nbformat.write(nb, str(path))


def held_by(folder: Path) -> str | None:
    """Who holds the run folder's lock (``RunFolder.lock``), or None when nobody does."""
    try:
        import fcntl
        with open(folder / ".lock") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
    except (ImportError, OSError):  # no lock file, or no advisory locks on this platform
        pass
    return None


def machine_class(cfg) -> str | None:
    """The hardware class (saol_core.runs.hardware_class) a run of ``cfg`` would have on this machine."""
    import torch
    from ..runs import hardware_class, hardware_record
    from ..step import amp_dtype, dtype_name
    from ..train import resolve_device
    device = resolve_device(cfg.train.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run itself warns about emulated bf16
        amp = dtype_name(amp_dtype(cfg, device))
    return hardware_class(str(device), hardware_record(device), amp, torch.__version__)


def check(study: Study, runs: list[Run], runs_dir: Path) -> None:
    """Fail fast, before hours of training: every run's config validates, its model builds (on the meta
    device: no memory, no time) and, where the study pins hardware classes, this machine is of one.
    Raises ConfigError naming the run."""
    from ..macs import build_meta
    built = set()
    for run in runs:
        try:
            cfg = make_config(project_path(study.path), run.overrides + [f"out_dir={runs_dir}"])
            key = repr(cfg.model)
            if key not in built:
                build_meta(cfg.model, 10)
                built.add(key)
            if study.hardware and run_status(study, run, runs_dir) != "finished":
                here = machine_class(cfg)
                if not any(fnmatch.fnmatchcase(here or "", p) for p in study.hardware):
                    raise ConfigError(f"this machine's hardware class is {here or 'unknown'}, but the study pins "
                                      f"{' or '.join(study.hardware)} (study.hardware); run it on such a machine, "
                                      f"or start another study (another --out) for this class")
        except (ConfigError, KeyError, ValueError) as e:
            raise ConfigError(f"run {run.name}: {e}") from None


def run_study(study: Study, out: Path, *, only: list[str] | None = None, extra: list[str] | None = None,
              table: bool = True, jobs: int = 1, train: bool = True) -> dict[str, str]:
    """Execute every unfinished run (resuming partial ones; ``jobs`` at a time), then the table notebook;
    ``train=False``: the table notebook alone, from the finished run records.

    Returns {run name: failure report} (empty when everything ran).
    """
    if not train:
        return _table(study, out)
    from tqdm.auto import tqdm
    runs_dir = out / "runs"
    runs = expand(study, extra, only)
    check(study, runs, runs_dir)
    status = {r.name: run_status(study, r, runs_dir) for r in runs}
    # seed by seed: a study cut short holds whole seeds, which is what its paired comparisons need
    todo = sorted((r for r in runs if status[r.name] in ("new", "partial")), key=lambda r: r.seed)
    failures = {r.name: f"finished with a different config (changed: {changed_keys(study, r, runs_dir)}); "
                        f"delete {runs_dir / r.name} to re-run it, or restore the params"
                for r in runs if status[r.name] == "stale"}
    for name, error in failures.items():
        print(f"[study] STALE {name}: {error}", flush=True)
    print(f"[study] {study.name}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run "
          f"-> {out}", flush=True)

    # parallel CPU runs share the cores instead of oversubscribing them (an execution setting: a run
    # keeps its identity, and the run's own train.threads wins)
    threads = [f"train.threads={max(1, (os.cpu_count() or 1) // jobs)}"] if jobs > 1 else []

    in_flight: dict[str, int] = {}  # run name -> epochs
    ended: set[str] = set()  # runs whose notebook returned: the watcher prints their last lines, then drops them

    def one(run: Run) -> tuple[Run, str | None]:
        # another runner (a second --jobs pool, another machine on a shared folder) may have taken or
        # finished this run since the plan was made: leave it to that one
        holder = held_by(runs_dir / run.name)
        if holder or run_status(study, run, runs_dir) == "finished":
            tqdm.write(f"[study] skipping {run.name}: " + (f"in use by {holder}" if holder else "finished meanwhile"))
            return run, None
        overrides = threads + run.overrides
        in_flight[run.name] = make_config(project_path(study.path), run.overrides).train.epochs
        output = runs_dir / run.name / Path(study.notebook).name
        try:
            error = execute(study.notebook, output, {"PARAMS": run.params, "OVERRIDES": overrides,
                                                     "OUT_DIR": str(runs_dir)})
            if project_path(output).exists():
                strip_images(project_path(output))
            return run, error
        finally:
            ended.add(run.name)

    done = threading.Event()
    watcher = threading.Thread(target=_report_epochs, args=(runs_dir, in_flight, done, ended), daemon=True)
    watcher.start()

    # each run is its own kernel process: threads only wait on them
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        with tqdm(total=len(todo), desc=study.name, unit="run", dynamic_ncols=True) as bar:
            for run, error in pool.map(one, todo):
                if error:
                    failures[run.name] = error
                    tqdm.write(f"[study] FAILED {run.name}: {error}")
                bar.set_postfix_str(run.name)
                bar.update(1)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C (or timeout's) must not cut the clean-up
        done.set()
        pool.shutdown(wait=False, cancel_futures=True)
        stopped = _stop_kernels()
        import shlex
        again = ["python", "-m", "saol_core.study", study.path, "--out", str(out)]
        again += ["--only", *only] if only else []
        again += ["--set", *extra] if extra else []
        again += ["--jobs", str(jobs)] if jobs > 1 else []
        again += [] if table else ["--no-table"]
        raise StudyInterrupted(f"interrupted: stopped {stopped} training kernel(s); finished runs are kept and "
                               f"interrupted ones resume from their last checkpoint. Resume with: "
                               f"{shlex.join(again)}") from None
    done.set()
    watcher.join()
    pool.shutdown()
    return {**failures, **(_table(study, out) if table else {})}


def _table(study: Study, out: Path) -> dict[str, str]:
    """Execute the table notebook; {"(table)": failure report} or {}."""
    output = out / Path(study.table_notebook).name
    error = execute(study.table_notebook, output, {"PARAMS": study.path, "OUT_DIR": str(out)})
    if project_path(output).exists():
        clean_notebook(project_path(output))   # no timings: regenerating unchanged records changes no file
    if error:
        print(f"[study] FAILED table notebook: {error}", flush=True)
        return {"(table)": error}
    print(f"[study] table: {out / 'table.md'}; report: {out / 'README.md'}", flush=True)
    return {}


# ---- committed notebooks -------------------------------------------------------------------------------

def clean_notebook(path: str | Path) -> None:
    """Drop execution metadata (papermill timings, kernel run times, widget state) and join a cell's
    consecutive prints to one stream (the kernel splits them where its output buffer happens to flush), so a
    notebook's diff shows only its sources and outputs."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"   # papermill draws a random id each time
        outputs = []
        for output in cell.get("outputs", []):
            last = outputs[-1] if outputs else None
            if last is not None and output.output_type == last.output_type == "stream" and output.name == last.name:
                last.text += output.text
            else:
                outputs.append(output)
        if "outputs" in cell:
            cell.outputs = outputs
    nbformat.write(nb, str(path))


def refresh_notebooks(names: list[str] | None = None) -> dict[str, str]:
    """Re-execute notebooks/*.ipynb in place with their own (smoke) parameters, then clean them.

    Their default scratch run folders (``runs/notebooks/``) are removed first, so the committed
    outputs show a fresh training run rather than a resumed one.
    """
    import shutil
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if names:
        paths = [p for p in paths if any(fnmatch.fnmatch(p.name, n) or p.stem == n for n in names)]
    shutil.rmtree(ROOT / "runs" / "notebooks", ignore_errors=True)
    failures = {}
    for path in paths:
        print(f"[study] executing {path.relative_to(ROOT)}", flush=True)
        error = execute(path.relative_to(ROOT), path.relative_to(ROOT), {})
        if error:
            failures[path.name] = error
            print(f"[study] FAILED {error}", flush=True)
        clean_notebook(path)
    return failures


def _print_plan(study: Study, out: Path, runs: list[Run]) -> None:
    import shlex
    runs_dir = out / "runs"
    print(f"# {study.title}\n# {len(runs)} runs -> {runs_dir}/<run>/ (notebook {study.notebook})")
    for run in runs:
        status = run_status(study, run, runs_dir)
        print(f"[{status}] {run.name}\n    python -m saol_core.train "
              + shlex.join([run.params, *run.overrides, f"out_dir={runs_dir}"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saol_core.study", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Paths are relative to the project root.")
    ap.add_argument("params", nargs="?", help="a params file with a study: section, e.g. params/default.yaml")
    ap.add_argument("--smoke", action="store_true",
                    help="use params/smoke/<same name> (the grid on CPU in minutes); default out runs/smoke/<name>")
    ap.add_argument("--out", help="report folder (default reports/<name>, or runs/smoke/<name> with --smoke)")
    ap.add_argument("--only", nargs="+", metavar="GLOB", help="only runs whose name matches, e.g. 'wrn40_2-*' '*-s0'")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every run")
    ap.add_argument("--dry-run", action="store_true", help="list the runs, their status and train commands")
    ap.add_argument("--jobs", type=int, default=1, help="runs executed at once (e.g. small nets on a big GPU)")
    ap.add_argument("--no-table", action="store_true", help="skip the table notebook at the end")
    ap.add_argument("--table-only", action="store_true",
                    help="only regenerate the table and report from the finished run records (no training)")
    ap.add_argument("--hardware", nargs="+", metavar="PATTERN",
                    help="hardware classes this report folder accepts instead of study.hardware (with --out: the "
                         "same study on another class, e.g. 'cuda NVIDIA H200 *')")
    ap.add_argument("--debug", action="store_true", help="show the traceback of a reported error")
    ap.add_argument("--refresh-notebooks", nargs="*", metavar="NAME",
                    help="re-execute notebooks/ (or the named ones) in place with their smoke parameters")
    args = ap.parse_args(argv)
    if args.refresh_notebooks is not None:
        return 1 if refresh_notebooks(args.refresh_notebooks) else 0
    if not args.params:
        ap.error("give a params file (or --refresh-notebooks)")
    path = args.params
    if args.smoke:
        path = str(Path("params/smoke") / Path(path).name)
    try:
        study = load_study(path)
        out = Path(args.out) if args.out else default_out(path, args.smoke)
        if args.hardware:
            if not args.out:
                raise ConfigError("--hardware needs --out: runs of another class go to a report folder of their own")
            study.hardware = list(args.hardware)
        if args.dry_run:
            runs = expand(study, args.set, args.only)
            _print_plan(study, out, runs)
            check(study, runs, out / "runs")
            return 0
        failures = run_study(study, out, only=args.only, extra=args.set, table=not args.no_table,
                             jobs=args.jobs, train=not args.table_only)
    except (ConfigError, StudyInterrupted, RecordCorrupt) as e:
        if args.debug:
            raise
        print(str(e) if isinstance(e, StudyInterrupted) else f"error: {e}", file=sys.stderr)
        return 130 if isinstance(e, StudyInterrupted) else 2
    if failures:
        print(f"[study] {len(failures)} failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0
