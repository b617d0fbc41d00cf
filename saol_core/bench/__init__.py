"""Training / inference throughput of backbones x recipes, and of the data pipeline, in one process.

    python -m saol_core.bench --backbones wrn40_2 resnet110 --steps 8 --repeats 3
    python -m saol_core.bench --backbones resnet20 --recipes gap+cutmix --conventional --mode train
    python -m saol_core.bench --backbones resnet20 --recipes gap+cutmix --conventional --official-loop \
        --e2e-data $SAOL_DATA/cifar10-jpeg.tar.gz
    python -m saol_core.bench --device cuda --bf16 --compile
    python -m saol_core.bench --backbones resnet20 --recipes gap full --bf16 --threads 1 --eager-vs-compiled

Recipes (``recipes.RECIPES``, each a ``make_config`` override set, trained by the training loop's own
step, ``saol_core.step.TrainStep``): ``gap`` GAP-FC + CE; ``gap+cutmix`` GAP-FC + CutMix; ``saol`` SAOL
+ self-distilled GAP-FC, no CutMix; ``full`` SAOL + self-distilled GAP-FC + CutMix + L_SS1 (mask head)
+ L_SS2 (incl. its teacher forward, at ``loss.ss2_teacher_amp``'s default precision);
``full-step-teacher`` the same with the teacher at the step's own precision (fp32 on CPU).
CutMix p: the paper's value for the backbone (docs/method.md §5; 1.0 where the paper has none) unless
``--cutmix-prob`` is given. Every recipe of a backbone has its own mixing stream, all seeded alike, so
in every repeat all recipes draw the same boxes ("mixed" column: mixed / timed steps).
``--eager-vs-compiled`` adds each recipe's compiled step ("<recipe> compiled", ``train.compile``) to the
same interleaved repeats and says how much faster each one is than its eager step.

Method. Model-only figures: synthetic device-resident batches (no data loading), ``--warmup`` untimed
steps per recipe, then ``--repeats`` windows of ``--steps`` steps, recipes interleaved within each
repeat so that a load change on a shared machine hits all recipes alike; median [min-max] images/s.
Timing: torch.cuda.Event on GPU, time.perf_counter on CPU. Cost ratios are time per image relative to
a baseline (> 1 = slower), the median over repeats of the ratio within each repeat. "% peak" = MACs/
image x 2 FLOP x passes x images/s / peak FLOP/s, with passes = 3 for training (forward + backward ~ 3
forwards; the SS2 teacher forward of ``full`` is NOT counted) and 1 for inference; MACs =
``saol_core.macs.count_macs`` (eval-mode forward, every head the recipe carries). Peak = the best of a
large matmul and a large 3x3 convolution measured in this process at the start and at the end (fp32
on CPU, bf16 on GPU or with ``--bf16``): on AMD CPUs oneDNN's convolutions beat MKL's sgemm, so the
matmul alone is not the device's best GEMM rate.

``--conventional``: the same model and batch size trained end to end (data + step) from (a) the public
CutMix code's pipeline: a torch DataLoader over the uint8 images with per-image torchvision transforms
and CutMix on the host batch, and (b) this project's device-resident loader + device CutMix; one full
epoch of the offline digits set per repeat (worker start-up included, as in training). With
``--official-loop`` also (c) the public code's whole loop, rewritten in ``official`` (its CIFAR ResNet
with projection shortcuts, fp32, NCHW, its per-batch logging) on pipeline (a), and, with ``--bf16``,
(b) in fp32 as well: the end-to-end ratio to the official loop in the chosen and in the same precision.

Modules: ``measure`` (clock, repeats, ratios, peak), ``recipes`` (model-only rows, profiler
breakdown), ``pipelines`` (conventional vs resident), ``official`` (the public CutMix loop's model and step), ``report`` (reports/BENCHMARKS.md sections),
``__main__`` (the command line).
"""
from .measure import Stats, cost_ratio, flop_fraction, measure_peak, summarize, timed
from .pipelines import bench_pipelines, official_cutmix, official_paste
from .recipes import PAPER_CUTMIX_P, RECIPES, BenchSettings, Row, add_fractions, bench_backbone, recipe_config
from .report import HEADER, MARK, TARGETS, render_section, rows_table, target_lines, update_report

__all__ = ["Stats", "cost_ratio", "flop_fraction", "measure_peak", "summarize", "timed", "bench_pipelines",
           "official_cutmix", "official_paste", "PAPER_CUTMIX_P", "RECIPES", "BenchSettings", "Row", "add_fractions",
           "bench_backbone", "recipe_config", "HEADER", "MARK", "TARGETS", "render_section", "rows_table",
           "target_lines", "update_report"]
