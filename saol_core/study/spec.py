"""The ``study:`` section of a params file -> rows x variants x seeds -> runs (PARAMS + OVERRIDES each).

See ``saol_core.study`` for the format.
"""
from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, flatten, format_value, load_params, make_config
from ..runs import config_changes, read_json

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[A-Za-z0-9_.]+$")
STUDY_KEYS = {"title", "notebook", "table_notebook", "seeds", "rows", "grid", "variants", "columns",
              "delta_row", "paper", "papers", "comparisons", "setting", "set", "overlay", "define", "hardware",
              "budgets", "plateau"}
ACROSS = {"precision": "the precision", "hardware": "the device, chip and torch version"}
"""What a comparison built to cross a hardware-class part (a precision or hardware check) may let differ."""


@dataclass
class Row:
    name: str
    label: str
    set: dict = field(default_factory=dict)
    recipe: str | None = None
    seeds: list[int] | None = None  # the study's seeds this row runs (None = all of them)


@dataclass
class Variant:
    name: str
    label: str
    set: dict = field(default_factory=dict)


@dataclass
class Column:
    label: str
    variant: str
    metric: list[str]
    delta_to: str | None = None


@dataclass
class Comparison:
    """A paired difference a - b between two cells (``row.metric``) of one variant, over common seeds."""
    label: str
    a: tuple[str, str]      # (row, metric)
    b: tuple[str, str]
    paper: dict[str, float | None]  # the paper's a - b per reference model (first non-null gives the verdict)
    variant: str
    across: str | None = None  # a key of ACROSS: the class part this check compares (None: same class only)
    headline: bool = False     # one of the main comparisons the report opens with


@dataclass
class Run:
    name: str        # "<row>-<variant>-s<seed>": its run folder under <out>/runs/
    row: str
    variant: str
    seed: int
    params: str      # PARAMS of the training notebook
    overrides: list[str]  # OVERRIDES of the training notebook (section.key=value)


@dataclass
class Study:
    path: str
    name: str
    source: str
    title: str
    notebook: str
    table_notebook: str
    seeds: list[int]
    rows: list[Row]
    variants: list[Variant]
    columns: list[Column]
    papers: dict[str, dict[str, list]]  # reference model -> row -> per column, per metric
    comparisons: list[Comparison]
    setting: str  # how this study's setting differs from the paper's (shown in the report)
    delta_row: str | None
    set: dict
    overlay: str | None
    hardware: list[str] = field(default_factory=list)  # glob patterns of the hardware classes runs may use
    budgets: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (params file, report folder)
    plateau: float | None = None  # the most top-1 may still gain over the last quarter of training (points)


def project_path(path: str | Path) -> Path:
    """A path as written in params files / notebooks: absolute, or relative to the project root."""
    return Path(path) if Path(path).is_absolute() else ROOT / path


def _named(items: Any, cls: type, what: str, path: str) -> list:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: study.{what} must be a non-empty list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not NAME.match(str(item.get("name", ""))):
            raise ConfigError(f"{path}: each study.{what} entry needs a name of letters, digits, _ or . "
                              f"(got {item!r})")
        fields = set(cls.__dataclass_fields__)
        unknown = set(item) - fields
        if unknown:
            raise ConfigError(f"{path}: study.{what} entry {item['name']!r} has unknown keys "
                              f"{sorted(unknown)}; valid: {sorted(fields)}")
        out.append(cls(**{"label": item["name"], **item, "set": flatten(item.get("set") or {})}))
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: study.{what} names must be unique, got {names}")
    return out


def _grid_rows(rows: list[Row], grid: dict) -> list[Row]:
    """Each row x each combination of the grid's dotted-key value lists."""
    keys = list(flatten(grid))
    values = [flatten(grid)[k] for k in keys]
    if any(not isinstance(v, list) or not v for v in values):
        raise ConfigError(f"study.grid values must be non-empty lists, got {grid}")
    out = []
    for row in rows:
        for combo in itertools.product(*values):
            tag = "_".join(f"{k.rsplit('.', 1)[-1]}{re.sub(r'[^A-Za-z0-9.]+', '-', format_value(v)).strip('-')}"
                           for k, v in zip(keys, combo))
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in zip(keys, combo))
            out.append(Row(f"{row.name}_{tag}", f"{row.label} ({label})", {**row.set, **dict(zip(keys, combo))},
                           row.recipe, row.seeds))
    return out


def load_study(path: str | Path) -> Study:
    """Parse and check a params file's ``study:`` section (ConfigError names what is wrong)."""
    path = str(path)
    tree = load_params(project_path(path))
    spec = tree.get("study")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path} has no study: section (its format: saol_core/study/__init__.py)")
    unknown = set(spec) - STUDY_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown study keys {sorted(unknown)}; valid: {sorted(STUDY_KEYS)}")
    rows = _named(spec.get("rows") or [{"name": tree.get("name", "run"), "label": tree.get("name", "run")}],
                  Row, "rows", path)
    if spec.get("grid"):
        rows = _grid_rows(rows, spec["grid"])
    variants = _named(spec.get("variants") or [{"name": "run"}], Variant, "variants", path)
    columns = []  # default: the primary head's top-1 of each variant
    for c in spec.get("columns") or [{"label": v.label, "variant": v.name} for v in variants]:
        metric = c.get("metric", "top1")
        columns.append(Column(c["label"], c["variant"], metric if isinstance(metric, list) else [metric],
                              c.get("delta_to")))
    labels = [c.label for c in columns]
    for c in columns:
        if c.variant not in {v.name for v in variants}:
            raise ConfigError(f"{path}: column {c.label!r} names variant {c.variant!r}; "
                              f"variants: {[v.name for v in variants]}")
        if c.delta_to is not None and c.delta_to not in labels:
            raise ConfigError(f"{path}: column {c.label!r}: delta_to {c.delta_to!r} is not a column {labels}")
    papers = {"paper": spec.get("paper") or {}} if "papers" not in spec else (spec["papers"] or {})
    if not isinstance(papers, dict) or not all(isinstance(v, dict) for v in papers.values()):
        raise ConfigError(f"{path}: study.papers must map a reference name to {{row: values}}")
    for ref, table in papers.items():
        for row, values in table.items():
            if row not in {r.name for r in rows} or not isinstance(values, list) or len(values) != len(columns):
                where = "paper" if "papers" not in spec else f"papers[{ref!r}]"
                raise ConfigError(f"{path}: study.{where}[{row!r}] must name a row and give {len(columns)} "
                                  f"value(s), one per column {labels}")
            # one list per column, one number (or None) per metric of the column
            table[row] = [v if isinstance(v, list) else [v] * len(c.metric) for v, c in zip(values, columns)]
    comparisons = [_comparison(c, rows, variants, papers, path) for c in spec.get("comparisons") or []]
    delta_row = spec.get("delta_row")
    if delta_row is not None and delta_row not in {r.name for r in rows}:
        raise ConfigError(f"{path}: study.delta_row {delta_row!r} is not a row")
    plateau = spec.get("plateau")
    if plateau is not None and (isinstance(plateau, bool) or not isinstance(plateau, (int, float)) or plateau <= 0):
        raise ConfigError(f"{path}: study.plateau must be a positive number of top-1 points, got {plateau!r}")
    seeds = spec.get("seeds", [0])
    for where, value in [("study.seeds", seeds)] + [(f"row {r.name!r} seeds", r.seeds) for r in rows if r.seeds is not None]:
        if not isinstance(value, list) or not value or not all(isinstance(s, int) for s in value):
            raise ConfigError(f"{path}: {where} must be a non-empty list of ints, got {value!r}")
    return Study(path=path, name=str(tree.get("name", Path(path).stem)), source=str(tree.get("source", "")),
                 title=str(spec.get("title", tree.get("name", path))),
                 notebook=spec.get("notebook", "notebooks/01_train.ipynb"),
                 table_notebook=spec.get("table_notebook", "notebooks/02_table.ipynb"),
                 seeds=seeds, rows=rows, variants=variants, columns=columns, papers=papers,
                 comparisons=comparisons, setting=str(spec.get("setting", "")), delta_row=delta_row, set=flatten(spec.get("set") or {}), overlay=spec.get("overlay"),
                 # a smoke study (an overlay) checks the machinery on any machine: no class to keep
                 hardware=[] if spec.get("overlay") else _patterns(spec.get("hardware"), path), budgets=_budgets(spec.get("budgets"), path),
                 plateau=None if plateau is None else float(plateau))


def _budgets(value: Any, path: str) -> dict[str, tuple[str, str]]:
    """``study.budgets``: {label: params file, or {params: file, out: report folder}}, the same comparisons
    at other training budgets; the report folder defaults to the study's (reports/<file stem>)."""
    out = {}
    value = {} if value is None else value
    for label, item in value.items() if isinstance(value, dict) else [(None, value)]:
        item = {"params": item} if isinstance(item, str) else item
        if not isinstance(label, str) or not isinstance(item, dict) or not isinstance(item.get("params"), str) \
                or set(item) - {"params", "out"}:
            raise ConfigError(f"{path}: study.budgets must map a label (e.g. '15 epochs') to a params file or to "
                              f"{{params: file, out: report folder}}, got {value!r}")
        if not project_path(item["params"]).is_file():
            raise ConfigError(f"{path}: study.budgets[{label!r}] names {item['params']}, which does not exist")
        out[label] = (item["params"], str(item.get("out") or default_out(item["params"], False)))
    return out


def _patterns(value: Any, path: str) -> list[str]:
    """``study.hardware``: one glob pattern of hardware classes (saol_core.runs.hardware_class) or a list."""
    patterns = [value] if isinstance(value, str) else value or []
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"{path}: study.hardware must be a hardware-class pattern or a list of them, e.g. "
                          f"'cpu AVX512 · bfloat16 · torch 2.13', got {value!r}")
    return patterns


def _comparison(item: Any, rows: list[Row], variants: list[Variant], papers: dict, path: str) -> Comparison:
    """``{label, a: row.metric, b: row.metric, paper: {reference: a - b}, variant}`` -> Comparison."""
    fields = {"label", "a", "b", "paper", "variant", "across", "headline"}
    if not isinstance(item, dict) or not {"label", "a", "b"} <= set(item) or set(item) - fields:
        raise ConfigError(f"{path}: each study.comparisons entry needs label, a, b (row.metric) and may "
                          f"have paper ({{reference: a - b}}), variant, across and headline; got {item!r}")
    if item.get("across") not in (None, *ACROSS):
        raise ConfigError(f"{path}: comparison {item['label']!r}: across={item['across']!r}; choose one of "
                          f"{sorted(ACROSS)} or leave it out")
    cells = []
    for side in ("a", "b"):
        row, _, metric = str(item[side]).partition(".")
        if row not in {r.name for r in rows} or not metric:
            raise ConfigError(f"{path}: comparison {item['label']!r}: {side}={item[side]!r} must be "
                              f"<row>.<metric> with a row of {[r.name for r in rows]}")
        cells.append((row, metric))
    paper = item.get("paper") or {}
    unknown = set(paper) - set(papers)
    if not isinstance(paper, dict) or unknown:
        raise ConfigError(f"{path}: comparison {item['label']!r}: paper must map references of "
                          f"study.papers {list(papers)} to the paper's a - b; unknown: {sorted(unknown)}")
    variant = item.get("variant", variants[0].name)
    if variant not in {v.name for v in variants}:
        raise ConfigError(f"{path}: comparison {item['label']!r}: variant {variant!r} is not a variant")
    return Comparison(str(item["label"]), cells[0], cells[1], paper, variant, item.get("across"),
                      bool(item.get("headline", False)))


def _sections(path: str, keep: tuple[str, ...]) -> dict:
    """The flattened ``keep`` sections of a params file (after its ``extends`` chain)."""
    tree = load_params(project_path(path))
    return flatten({k: v for k, v in tree.items() if k in keep})


def _recipe(study: Study, row: Row) -> dict:
    """Overrides that turn the study file's own recipe into the row's: the model/loss/optim/train keys
    where the row's recipe file differs (the data section stays the study's), and its source."""
    if not row.recipe:
        return {}
    base = _sections(study.path, ("model", "loss", "optim", "train"))
    recipe = {k: v for k, v in _sections(row.recipe, ("model", "loss", "optim", "train")).items()
              if base.get(k) != v}
    source = load_params(project_path(row.recipe)).get("source")
    return {"source": f"{study.source}; {source}" if source else study.source, **recipe}


def row_seeds(study: Study, row: Row) -> list[int]:
    """The seeds a row runs: the study's, or those of them the row lists (a smoke study's ``seeds: [0]``
    thus cuts every row to seed 0)."""
    return [s for s in study.seeds if row.seeds is None or s in row.seeds]


def expand(study: Study, extra: list[str] | None = None, only: list[str] | None = None) -> list[Run]:
    """The study's runs in table order (row, variant, seed), filtered by ``only`` glob patterns."""
    sections = ("data", "model", "loss", "optim", "train", "wsol")
    overlay = _sections(study.overlay, sections) if study.overlay else {}
    cli = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in extra or [])}
    runs = []
    for row, variant, seed in ((r, v, s) for r in study.rows for v in study.variants for s in row_seeds(study, r)):
        name = f"{row.name}-{variant.name}-s{seed}"
        if only and not any(fnmatch.fnmatchcase(name, p) for p in only):
            continue
        tree = {**_recipe(study, row), **row.set, **variant.set, **study.set, **overlay, **cli,
                "name": name, "seed": seed}
        runs.append(Run(name, row.name, variant.name, seed, study.path,
                        [f"{k}={format_value(v)}" for k, v in tree.items()]))
    if only and not runs:
        names = [r.name for r in expand(study, extra)]
        raise ConfigError(f"--only {' '.join(only)} matches no run of {study.path}; its runs are named like "
                          f"{', '.join(names[:3])}, ... (--dry-run lists them)")
    return runs


def changed_keys(study: Study, run: Run, runs_dir: str | Path) -> list[str]:
    """Config keys where the run folder's saved config.yaml differs from what the study asks for now,
    by the training loop's notion of "the same experiment" (execution settings like device ignored);
    [] when the folder has no config.yaml."""
    path = project_path(runs_dir) / run.name / "config.yaml"
    if not path.exists():
        return []
    saved = yaml.safe_load(path.read_text())
    now = make_config(project_path(study.path), run.overrides + [f"out_dir={runs_dir}"]).to_dict()
    return config_changes(saved, now)


def run_status(study: Study, run: Run, runs_dir: str | Path) -> str:
    """"finished", "stale" (finished, but the params changed since), "partial" (a checkpoint to resume
    from) or "new"."""
    folder = project_path(runs_dir) / run.name
    summary = folder / "summary.json"
    if summary.exists() and read_json(summary).get("finished"):
        return "stale" if changed_keys(study, run, runs_dir) else "finished"
    return "partial" if (folder / "checkpoint.pt").exists() else "new"


def default_out(study_path: str, smoke: bool) -> Path:
    stem = Path(study_path).stem
    return Path("runs/smoke") / stem if smoke else Path("reports") / stem
