#!/usr/bin/env bash
# One prepared command for a GPU machine that is lent for minutes: the CUDA tests, a short GPU benchmark,
# then as many runs of a study as fit in the time given, several sharing the GPU. Everything it makes lands
# in OUT: a log, the bench report, and study.tar (the run records AND their checkpoints, so that the next
# call, on this machine or a later one, resumes where this one stopped). README: "A GPU session".
#
#   scripts/gpu_run.sh OUT [STUDY] [MINUTES]
#   scripts/gpu_run.sh "$OUT" params/cifar10_resnet20_200ep.yaml 7
#
# Environment: JOBS runs sharing the GPU (12); DEVICE cuda (cpu rehearses the whole script on a CPU);
# COMPILE true (the study's runs take the graphed step, train.compile; false = eager);
# WHEELS a folder of wheels for the Python packages the machine lacks (wheels/; `pip download` them here);
# CARRY a study.tar brought back from an earlier call, unpacked first; SKIP_TESTS=1, SKIP_BENCH=1.
# The machine's own torch is used: the project's pin (torch===2.13.0) cannot be fetched offline, and the
# torch version is part of each run's hardware class, so GPU runs go to a report folder of their own.
set -euo pipefail
out=${1:?usage: scripts/gpu_run.sh OUT [STUDY] [MINUTES]}
study=${2:-params/cifar10_resnet20_200ep.yaml}
minutes=${3:-7}
jobs=${JOBS:-12}
device=${DEVICE:-cuda}
compile=${COMPILE:-true}
wheels=${WHEELS:-wheels}
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { echo "[gpu_run $(date -u +%H:%M:%S)] $*" | tee -a "$out/gpu_run.log"; }

log "machine: $($python -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
  torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)")')"
if ! $python -c "import saol_core, torchvision, papermill, scrapbook, ipykernel, cv2, seaborn, sklearn, scipy" 2>/dev/null; then
  log "installing what is missing from $wheels (torch untouched)"
  $python -m pip install --quiet --no-index --find-links "$wheels" papermill scrapbook nbformat ipykernel six pyyaml \
    scipy opencv-python-headless pandas seaborn scikit-learn tqdm matplotlib pillow ipywidgets 2>&1 | tail -3 | tee -a "$out/gpu_run.log"
  $python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -3 | tee -a "$out/gpu_run.log"
fi
$python -m ipykernel install --sys-prefix --name python3 >/dev/null   # the kernel papermill runs the notebooks in

if [ -z "${SKIP_TESTS:-}" ]; then
  log "CUDA tests"
  if [ "$device" = cuda ]; then
    $python -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -5 | tee -a "$out/gpu_run.log"
  else
    log "DEVICE=$device: the CUDA tests would be skipped; rehearsal goes on"
  fi
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  cp reports/BENCHMARKS.md "$out/BENCHMARKS.md"
  # eager, then graphed (train.compile: CUDA graphs); ResNet-20 at batch 64, WRN-40-2 at the paper's 128;
  # the runs-sharing-the-GPU layouts for ResNet-20 GAP-FC. Inductor's cache (kept in OUT) makes the
  # compiled study runs below start without compiling again.
  export TORCHINDUCTOR_CACHE_DIR="$out/inductor-cache"
  for compiled in "" --compile; do
    log "bench ${compiled:-eager}"
    $python -m saol_core.bench --device "$device" --backbones resnet20 --recipes gap saol full --bf16 $compiled \
      --batch-size 64 --steps 20 --warmup 5 --repeats 3 --layouts 1x1 4x1 12x1 --out "$out/BENCHMARKS.md" 2>&1 \
      | tail -14 | tee -a "$out/gpu_run.log"
    $python -m saol_core.bench --device "$device" --backbones wrn40_2 --recipes gap saol full --bf16 $compiled \
      --batch-size 128 --steps 20 --warmup 5 --repeats 3 --out "$out/BENCHMARKS.md" 2>&1 | tail -8 \
      | tee -a "$out/gpu_run.log"
  done
fi

name=$(basename "$study" .yaml)
runs_out="reports/${name}_${device}"
if [ -n "${CARRY:-}" ] && [ -f "$CARRY" ]; then
  log "unpacking $CARRY (records and checkpoints of an earlier call)"
  tar -xf "$CARRY"
fi
pattern="$device *"
log "study $study -> $runs_out: $jobs runs at a time for at most $minutes min"
# SIGINT at the limit: the runner stops its kernels, and every run resumes from its last epoch checkpoint
timeout --signal=INT "$((minutes * 60))" $python -m saol_core.study "$study" --out "$runs_out" --jobs "$jobs" \
  --no-table --set "train.device=$device" "train.compile=$compile" --hardware "$pattern" 2>&1 | grep -v "IPKernelApp" | tail -40 \
  | tee -a "$out/gpu_run.log" || true
$python -m saol_core.study "$study" --out "$runs_out" --set "train.device=$device" "train.compile=$compile" \
  --hardware "$pattern" --dry-run 2>/dev/null \
  | grep '^\[' | cut -d']' -f1 | sort | uniq -c | tee -a "$out/gpu_run.log" || true
tar -cf "$out/study.tar" "$runs_out"
log "wrote $out/study.tar ($(du -h "$out/study.tar" | cut -f1)); bring it back, commit the records (never the .pt), and pass it as CARRY next time"
