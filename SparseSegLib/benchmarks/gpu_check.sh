#!/usr/bin/env bash
# The GPU figures of issues 19 and 17 in one device call (what it printed: docs/results/interactive.md, "On a GPU",
# and docs/results/mean-teacher.md, "On a GPU").
#
# A lent GPU machine has PyTorch but neither SimpleITK nor MONAI, no ../shared/data and no network, and a call
# carries at most 64 MiB; so this machine packs what the call needs into ignored folders first:
#   .whl/   monai-1.6.1-py3-none-any.whl (pip download --no-deps, see the device tool's README)
#   .gpu/   simpleitk.tar.xz (the SimpleITK 2.5 cp311-abi3 manylinux wheel unpacked and re-packed with xz -9: 28 MB
#           instead of 53), data/left_atrium (the one dev scan start_speed uses, with a dataset.json listing it)
# and the reduced left-atrium cohort travels as bench-output/mean_teacher/data (`mean_teacher prepare`).
# The call is then: run(command="bash SparseSegLib/benchmarks/gpu_check.sh",
#                       carry=[".gpu", ".whl", "bench-output/mean_teacher/data"], timeout_s=600).
#
# Steps, each bounded so the whole script ends before GPU_TOTAL seconds:
#   0. `device_paths`: every method's job and cohort path for a few iterations on the GPU, as real `sparseseg`
#      processes on the bundled sample scans (finished or the error, per path): the paths these CPU machines never
#      run (GPU_PATHS_SECONDS, 240; 0 skips it; the costliest paths run last);
#   1. issue 19: `start_speed` twice (the exact Start job on a 240x240x155 scan; seconds to each round, Dice), then
#      `registration_speed` over GPU_REGISTRATION_WORKERS processes (does the registration round keep scaling with
#      cores where ITK's own threads stopped? empty: skip);
#   2. issue 17: UA-MT timed alone for a few iterations, then the semi-supervised trio (labelled only, MT, UA-MT,
#      13 of 64 labelled) and sparse MT (one central slice) run side by side with one iteration count, the longest
#      that the remaining time allows at the measured speed (at most the paper's 6000).
# Environment: GPU_DEVICE (cuda; cpu for a dry run here), GPU_TOTAL (570 s), GPU_PATHS_SECONDS (240), GPU_MAX_ITERATIONS (6000),
# GPU_SPEED_RUNS (2), GPU_REGISTRATION_WORKERS (1,4,16), OUT (where the log and results go; the device tool sets it).
set -u
OUT=${OUT:-/tmp/sparseseg-gpu-out}
DEVICE=${GPU_DEVICE:-cuda}
TOTAL=${GPU_TOTAL:-570}
MAX_ITERATIONS=${GPU_MAX_ITERATIONS:-6000}
SPEED_RUNS=${GPU_SPEED_RUNS:-2}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
left() { echo $((START + TOTAL - $(date +%s))); }

if ! python3 -c "import SimpleITK, monai" 2>/dev/null; then
  mkdir -p /tmp/site && tar xJf .gpu/simpleitk.tar.xz -C /tmp/site \
    && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/monai-*.whl \
    || { echo "package install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
if [ ! -e ../shared/data ]; then mkdir -p ../shared && ln -s "$PWD/.gpu/data" ../shared/data; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, monai, SimpleITK, numpy, os
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__,
      'SimpleITK', SimpleITK.Version.VersionString(), 'numpy', numpy.__version__, 'cpus', os.cpu_count())"
echo "setup done after $(( $(date +%s) - START )) s"

PATHS_SECONDS=${GPU_PATHS_SECONDS:-240}
if [ "$PATHS_SECONDS" -gt 0 ]; then
  echo "== every method's paths on $DEVICE (a few iterations each) =="
  timeout "$PATHS_SECONDS" python3 -m SparseSegLib.benchmarks.device_paths --device "$DEVICE" --iterations 10 \
    --timeout 90 --out /tmp/sparseseg-device-paths || echo "device_paths: a path failed or the step ran out of time"
fi

echo "== issue 19: Start on a 240x240x155 scan =="
for run in $(seq 1 "$SPEED_RUNS"); do
  timeout 150 python3 -m SparseSegLib.benchmarks.start_speed --device "$DEVICE" || echo "start_speed run $run failed"
done
REGISTRATION_WORKERS=${GPU_REGISTRATION_WORKERS-1,4,16}
if [ -n "$REGISTRATION_WORKERS" ]; then
  timeout 240 python3 -m SparseSegLib.benchmarks.registration_speed --workers "$REGISTRATION_WORKERS" \
    || echo "registration_speed failed or timed out"
fi

echo "== issue 17: Mean Teacher / UA-MT on the 1.25 mm left-atrium cohort =="
DATA=bench-output/mean_teacher/data
RUNS=/tmp/sparseseg-gpu-runs
rm -rf "$RUNS"; mkdir -p "$RUNS"
BENCH="python3 -m SparseSegLib.cli bench --dataset $DATA --networks 3d --split 0.8,0,0.2 --seed 0 --device $DEVICE \
--budget paper"
CALIBRATION=${GPU_CALIBRATION:-20}
timeout 150 $BENCH --iterations $CALIBRATION --annotation full --methods ua-mt --labelled 13 \
  --out "$RUNS/calibration" > "$RUNS/calibration.log" 2>&1 || { tail -20 "$RUNS/calibration.log"; echo "calibration failed"; }
# The last rate the progress line printed (past the warm-up), else the whole training time over the iterations.
PER_ITERATION=$(grep -o "[0-9.]* s/it" "$RUNS/calibration.log" | tail -1 | cut -d" " -f1)
[ -n "$PER_ITERATION" ] || PER_ITERATION=$(python3 -c "import json
r = json.load(open('$RUNS/calibration/results.json'))
print(max(f['train_seconds'] for run in r['runs'].values() for f in run['folds']) / $CALIBRATION)" 2>/dev/null || echo 1)
# The runs share the GPU and 16 cores: budget each at UA-MT's time alone x GPU_SHARE (first call: 2.5 for four runs,
# which then ran at 0.08-0.09 s per iteration each against 0.10 alone, so the GPU was not the limit).
ITERATIONS=$(python3 -c "print(max(20, min($MAX_ITERATIONS, int(($(left) - 60) / (max($PER_ITERATION, 0.01) * ${GPU_SHARE:-1.2})))))")
echo "UA-MT alone: $PER_ITERATION s per iteration (rate after $CALIBRATION iterations); $(left) s left -> $ITERATIONS iterations"
declare -A SPEC=(
  [semi-labelled-only]="--annotation full --methods mean-teacher --labelled 13 --option consistency=0"
  [semi-mt]="--annotation full --methods mean-teacher --labelled 13"
  [semi-uamt]="--annotation full --methods ua-mt --labelled 13"
  [sparse-mt]="--annotation central-slice --methods mean-teacher"
  [sparse-uamt]="--annotation central-slice --methods ua-mt"
  [full]="--annotation full --methods mean-teacher --option consistency=0"
)
nvidia-smi dmon -s u -d 10 > "$OUT/dmon.txt" 2>&1 &
DMON=$!
PIDS=()
for name in "${!SPEC[@]}"; do
  mkdir -p "$RUNS/$name"
  echo "sparseseg bench --dataset $DATA --networks 3d --split 0.8,0,0.2 --seed 0 --device $DEVICE --budget paper \
--iterations $ITERATIONS ${SPEC[$name]} --out $RUNS/$name" > "$RUNS/$name/command.txt"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=2 timeout $(( $(left) - 15 )) $BENCH --iterations "$ITERATIONS" ${SPEC[$name]} --out "$RUNS/$name" \
    > "$RUNS/$name.log" 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"
kill $DMON 2>/dev/null
for name in calibration "${!SPEC[@]}"; do
  tail -3 "$RUNS/$name.log"
done
python3 -m SparseSegLib.benchmarks.mean_teacher report "$RUNS"/semi-labelled-only "$RUNS"/semi-mt "$RUNS"/semi-uamt \
  "$RUNS"/full "$RUNS"/sparse-mt "$RUNS"/sparse-uamt 2>&1 | tail -10
tar czf "$OUT/runs.tgz" -C "$RUNS" . 2>/dev/null
echo "total $(( $(date +%s) - START )) s"
