"""A paper table as a grid of training runs, executed through papermill, then collected into a table.

    python -m saol_core.study params/table5_selfsup.yaml              # -> reports/table5_selfsup/
    python -m saol_core.study params/table5_selfsup.yaml --smoke      # params/smoke/..., -> runs/smoke/...
    python -m saol_core.study params/default.yaml --only 'resnet20-*' --dry-run
    python -m saol_core.study --refresh-notebooks                     # re-execute notebooks/ in place

A params file's ``study:`` section (ignored by ``make_config``) declares the grid:

    study:
      title: "Table 5: ..."                 # heading of the report
      notebook: notebooks/01_train.ipynb    # executed once per run (PARAMS, OVERRIDES, OUT_DIR)
      table_notebook: notebooks/02_table.ipynb   # executed once at the end (PARAMS, OUT_DIR)
      seeds: [0, 1, 2, 3, 4]
      rows:      # table lines: name, label, optional recipe file, dotted-key overrides (default: one row),
                 # optional seeds (those of the study's seeds this row runs)
        - {name: saol_cm, label: SAOL + CutMix, recipe: params/base/cifar_abn.yaml, set: {loss.cutmix_prob: 0.5}}
      grid: {optim.lr: [0.05, 0.1]}         # optional: every row x every combination (a cartesian product)
      variants:  # runs per row (one run per row x variant x seed; default: one)
        - {name: c10, label: CIFAR-10, set: {data.dataset: cifar10}}
      columns:   # table columns: a variant's metric, a list gives "top-1 / top-5" (default: top1 per variant)
        - {label: CIFAR-10, variant: c10, metric: top1, delta_to: <column label>}
      delta_row: <row name>                 # deltas against this row (default: the same row)
      paper: {saol_cm: [96.21]}             # the paper's numbers, per row, aligned with `columns`
      papers: {ResNet-110: {...}, WRN-40-2: {...}}   # instead of paper: several reference models
      comparisons:  # paired differences a - b over the seeds run on one hardware class, 95 % t-interval,
                    # verdict on the sign and size of the paper's a - b (docs/method.md, "Verdicts")
        - {label: SAOL − GAP-FC, a: saol.saol_top1, b: gap.gap_top1, paper: {ResNet-110: 1.61}}
        - {label: bf16 − fp32, a: gap.gap_top1, b: gap_fp32.gap_top1, across: precision}   # a check across one class part
      budgets: {15 epochs: params/short.yaml, 100 epochs: params/long.yaml}   # optional: the headline comparisons
                                            # of the same study at other budgets, drawn side by side
      hardware: "cpu AVX512 · bfloat16 · torch 2.13"   # optional: glob pattern(s) of the hardware classes runs may
                                            # use (saol_core.runs.hardware_class); a run elsewhere is refused
      plateau: 1.0                          # optional: the most a row's top-1 may still gain over the last quarter
                                            # of its epochs for the report to call it plateaued
      setting: "how this study differs from the paper's setting"   # shown in the report
      set: {train.eval_every: 1}            # overrides applied to every run
      overlay: params/smoke/overlay.yaml    # a params file applied on top of every run (smoke studies)
      define: {...}                         # free space for YAML anchors; ignored

A run's config = this file's own sections < the row's recipe < row ``set`` < grid values < variant
``set`` < study ``set`` < overlay < ``--set`` < name/seed. Paths in ``study`` are relative to the project
root; ``extends:`` is relative to the file. Metric ``top1``/``top5`` is the primary head's (SAOL when
present, else GAP-FC); other metric names are looked up in the run summary's ``final`` entry, then at
its top level. Cells report the final epoch's accuracy (not the best epoch's: that would select on the
test set), mean +- sample std over the finished seeds.
"""
from .report import (budget_comparisons, collect, comparisons, comparisons_markdown, evaluated_split, histories, maps_run, metric_value,
                     no_model_baseline, plateaus, plateaus_markdown, summarize, table_markdown, verdict_legend, write_report)
from .runner import clean_notebook, execute, main, refresh_notebooks, run_study
from .spec import (ROOT, Column, Row, Run, Study, Variant, changed_keys, expand, flatten, load_study, project_path,
                   run_status)

__all__ = ["ROOT", "Column", "Row", "Run", "Study", "Variant", "budget_comparisons", "changed_keys", "clean_notebook", "collect", "no_model_baseline", "verdict_legend",
           "comparisons", "comparisons_markdown", "execute", "maps_run", "expand",
           "evaluated_split", "flatten", "histories", "load_study", "main", "metric_value", "plateaus", "plateaus_markdown", "project_path",
           "refresh_notebooks",
           "run_status", "run_study", "summarize", "table_markdown", "write_report"]
