#!/usr/bin/env bash
# One prepared GPU run of the speed issue: the full TDBN (two DenseNet201, 224 px) train and infer, batch 32 and 64,
# fp32 and bf16, on every Keras backend that imports plus the plain-PyTorch reference (and its channels_last row).
# Sized for one H100 / H200 in about 8 minutes: 4 bench invocations, each backend's compile and 3 x 5 timed steps.
#
#   bash experiments/bench/gpu.sh [OUT]        (default OUT: $OUT/bench-gpu where $OUT is set, else runs/bench-gpu)
#
# It installs nothing from the network. Packages the machine lacks travel as wheels in .whl/ (see
# experiments/bench/gpu-wheels.sh, run where pip reaches the registry); a backend that does not import is skipped
# with a note, and so is the rest of a run that outlives its share of the time (BENCH_STEP_TIMEOUT seconds).
# Results: OUT/b<batch>-<precision>/bench.{md,csv,png} and OUT/gpu.md (all tables one after the other).
# A dry run on a CPU: BENCH_ENCODER=densenet121 BENCH_IMAGE_SIZE=64 BENCH_BATCHES="2 4" BENCH_BACKENDS=torch,torch-reference
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DEST=${1:-${OUT:+$OUT/bench-gpu}}
DEST=${DEST:-runs/bench-gpu}
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-150}
ENCODER=${BENCH_ENCODER:-densenet201}
SIZE=${BENCH_IMAGE_SIZE:-224}
BATCHES=${BENCH_BATCHES:-32 64}
mkdir -p "$DEST"
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX takes the GPU's memory as it needs it, so the other backends' children are not starved.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'

if ! $PY -c "import keras" 2>/dev/null; then
  echo "note: keras does not import here (carry it in .whl/, experiments/bench/gpu-wheels.sh); nothing to measure"
  exit 1
fi
backends=()
for b in torch jax tensorflow; do
  if $PY -c "import $b" 2>/dev/null; then backends+=("$b"); else echo "note: $b is not installed here: skipped"; fi
done
# The parent process measures its own backend: torch where it imports (the fastest to start), else the first.
parent=${backends[0]:-}
if [ -z "$parent" ]; then echo "note: no Keras backend imports here"; exit 1; fi
list=$(IFS=,; echo "${backends[*]}")
$PY -c "import torch" 2>/dev/null && list="$list,torch-reference,torch-reference-channels_last"
list=${BENCH_BACKENDS:-$list}
echo "backends: $list"

: > "$DEST/gpu.md"
status=0
for batch in $BATCHES; do
  for precision in fp32 bf16; do
    out="$DEST/b$batch-$precision"
    echo "=== TDBN $ENCODER $SIZE px, batch $batch, $precision ($(date +%T))"
    KERAS_BACKEND=$parent timeout "$STEP_TIMEOUT" $PY cli.py bench --model tdbn --encoder "$ENCODER" \
      --mode train --mode infer --image-size "$SIZE" --batch-size "$batch" --steps 5 --repeats 3 \
      --precision "$precision" --backends "$list" --out "$out" || { echo "note: this run stopped (exit $?)"; status=1; }
    if [ -f "$out/bench.md" ]; then
      { echo "### batch $batch, $precision"; echo; cat "$out/bench.md"; echo; } >> "$DEST/gpu.md"
    fi
  done
done
echo "tables: $DEST/gpu.md"
exit $status
