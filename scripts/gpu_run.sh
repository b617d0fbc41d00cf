#!/usr/bin/env bash
# One prepared command for a GPU machine that is lent for minutes: the CUDA tests, a short GPU benchmark,
# then as many runs of a study as fit in the time given, several sharing the GPU. Everything it makes lands
# in OUT: a log, the bench report, records.tar (the run records, no checkpoints) and, where a run is unfinished,
# its checkpoints in 15 MiB parts (checkpoints.tar.part00, ...): what comes back from a lent machine is capped
# at 8 files of 16 MiB. A later call on the same machine resumes from the checkpoints it left there; CARRY
# brings them to another one. README: "A GPU session".
#
#   scripts/gpu_run.sh OUT [STUDY] [MINUTES]
#   scripts/gpu_run.sh "$OUT" params/cifar10_resnet20_200ep.yaml 7
#
# Environment: JOBS runs sharing the GPU (12); DEVICE cuda (cpu rehearses the whole script on a CPU);
# COMPILE true (the study's runs take the graphed step, train.compile; false = eager);
# WHEELS a folder of wheels for the Python packages the machine lacks (wheels/, made here by `make gpu-bundle`);
# CARRY a folder holding what an earlier call brought back (records.tar, checkpoints.tar.part*), unpacked
# first; SKIP_TESTS=1, SKIP_BENCH=1.
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
needs="import torchvision, papermill, scrapbook, ipykernel, cv2, seaborn, sklearn, scipy, pandas, yaml, tqdm"
if ! $python -c "$needs" 2>/dev/null; then
  # --target beside the image's packages: its site-packages may be read-only, and --no-deps leaves its torch,
  # numpy, pandas alone; the runner's kernels inherit PYTHONPATH, and papermill's 'python3' is then the
  # machine's own Python with ipykernel importable, so no kernelspec is installed
  site=${SITE:-/tmp/saol-site}
  log "installing what is missing from $wheels into $site (torch untouched)"
  $python -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$site" "$wheels"/*.whl 2>&1 \
    | tail -3 | tee -a "$out/gpu_run.log"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # saol_core, for the runner and every kernel it starts
$python -c "$needs, saol_core" || { log "missing packages: 'make gpu-bundle' here makes wheels/; carry it"; exit 1; }
data=${SAOL_DATA:-data}
[ -e "$data/cifar10-jpeg.tar.gz" ] || log "no $data/cifar10-jpeg.tar.gz: 'make gpu-bundle' here puts it in data/"

if [ -z "${SKIP_TESTS:-}" ]; then
  if [ "$device" = cuda ]; then
    # the eager tests gate everything; the graphed ones only the graphed step, so a failure there still
    # leaves the minutes to eager runs rather than to nothing
    log "CUDA tests, eager"
    $python -m pytest -q -m gpu tests/test_gpu.py -k "not graphed" 2>&1 | tail -15 | tee -a "$out/gpu_run.log" \
      || { log "the eager CUDA tests failed: no study runs on this machine (the log above says which)"; exit 1; }
    log "CUDA tests, graphed"
    if ! $python -m pytest -q -m gpu tests/test_gpu.py -k graphed 2>&1 | tail -15 | tee -a "$out/gpu_run.log" \
        && [ "$compile" = true ]; then
      log "the graphed step failed its tests: the study runs eager (train.compile=false)"
      compile=false
    fi
  else
    log "DEVICE=$device: the CUDA tests would be skipped; rehearsal goes on"
  fi
fi

# Inductor's cache outside OUT (whose files are counted): the compiled bench, the study's runs and a later
# call on this machine compile each graph once
export TORCHINDUCTOR_CACHE_DIR=/tmp/saol-inductor-cache
if [ -z "${SKIP_BENCH:-}" ]; then
  cp reports/BENCHMARKS.md "$out/BENCHMARKS.md"
  # eager, then graphed (train.compile: CUDA graphs); ResNet-20 at batch 64, WRN-40-2 at the paper's 128;
  # the runs-sharing-the-GPU layouts for ResNet-20 GAP-FC
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
if [ -n "${CARRY:-}" ]; then
  log "unpacking $CARRY (records and checkpoints of an earlier call)"
  tar -xf "$CARRY/records.tar"
  if compgen -G "$CARRY/checkpoints.tar.part*" >/dev/null; then cat "$CARRY"/checkpoints.tar.part* | tar -xf -; fi
fi
pattern="$device *"
log "study $study -> $runs_out: $jobs runs at a time for at most $minutes min"
# SIGINT at the limit: the runner stops its kernels, and every run resumes from its last epoch checkpoint
timeout --signal=INT "$((minutes * 60))" $python -m saol_core.study "$study" --out "$runs_out" --jobs "$jobs" \
  --no-table --set "train.device=$device" "train.compile=$compile" --hardware "$pattern" 2>&1 | grep -v "IPKernelApp" | tail -40 \
  | tee -a "$out/gpu_run.log" || true
plan=$($python -m saol_core.study "$study" --out "$runs_out" --set "train.device=$device" "train.compile=$compile" \
  --hardware "$pattern" --dry-run 2>/dev/null || true)
grep '^\[' <<<"$plan" | cut -d']' -f1 | sort | uniq -c | tee -a "$out/gpu_run.log" || true
[ -d "$runs_out" ] || { log "the study made no run folder: its output above says why"; exit 1; }
tar -cf "$out/records.tar" --exclude='*.pt' --exclude=.lock "$runs_out"
partial=$(sed -n "s|^\[partial\] |$runs_out/runs/|p" <<<"$plan")   # the runner's own status: a checkpoint to resume
rm -f "$out"/checkpoints.tar.part*
if [ -n "$partial" ]; then
  find $partial -name '*.pt' -print0 | tar -cf - --null -T - | split -b 15M -d - "$out/checkpoints.tar.part"
fi
log "wrote $(cd "$out" && ls -sh records.tar checkpoints.tar.part* 2>/dev/null | tr '\n' ' ')"
log "commit the records (never the .pt); before another call, unpack records.tar into the checkout (a call sends
  the working tree, and the checkpoints it left on a warm machine need their records), or pass the folder all of it
  came back in as CARRY"
