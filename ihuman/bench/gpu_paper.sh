#!/usr/bin/env bash
# One call on a lent GPU machine: how fast the paper preset runs (random weights: speed does not
# depend on their values). Everything lands in $OUT as JSON and logs:
#
#   1. `ihuman info --costs`: FLOPs and weight bytes per segment and stage (the floor to compare to);
#   2. `python -m ihuman.bench.kernels`: attention TFLOP/s against SDPA's flash and cuDNN backends;
#   3. `ihuman bench latency --mode engine` for $RUN_SECONDS: fps, added latency p50/p99, first frame,
#      per-stage times, peak GPU memory;
#   4. the same through a real call (`--mode webrtc`) when aiortc imports there;
#   5. `pytest -m gpu` with TRITON_INTERPRET=0.
#
# Dry run on a CPU first (a typo must not cost GPU time):
#   DEVICE=cpu PRESET=tiny RUN_SECONDS=5 bash ihuman/bench/gpu_paper.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
RUN_SECONDS=${RUN_SECONDS:-60}
AUDIO=${AUDIO:-tests/fixtures/procedural/clip_001000/audio.wav}  # the machine has no espeak-ng
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$DEVICE" = cpu ] || export TRITON_INTERPRET=0
exec > >(tee "$OUT/session.log") 2>&1
stamp() { echo "== $(date +%T) $*"; }
IHUMAN=("$PY" -m ihuman)

stamp "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

stamp "segment costs ($PRESET)"
"${IHUMAN[@]}" info --preset "$PRESET" --costs --json > "$OUT/costs.json" && tail -n +1 "$OUT/costs.json" | head -40

stamp "attention kernels"
if [ "$DEVICE" = cpu ]; then
    TRITON_INTERPRET=1 "$PY" -m ihuman.bench.kernels --smoke --runs 2 --warmup 1 --out "$OUT/attention.json"
else
    timeout 150 "$PY" -m ihuman.bench.kernels --out "$OUT/attention.json"
fi

stamp "latency, engine mode ($PRESET, $RUN_SECONDS s)"
timeout $((RUN_SECONDS + 240)) "${IHUMAN[@]}" bench latency --mode engine --preset "$PRESET" --random-weights \
    --device "$DEVICE" --seconds "$RUN_SECONDS" --audio "$AUDIO" --out "$OUT/latency_engine"

if "$PY" -c "import aiortc" 2>/dev/null; then
    stamp "latency, webrtc mode ($PRESET, 30 s)"
    timeout 300 "${IHUMAN[@]}" bench latency --mode webrtc --preset "$PRESET" --random-weights \
        --device "$DEVICE" --seconds 30 --audio "$AUDIO" --out "$OUT/latency_webrtc"
else
    stamp "no aiortc here: the webrtc mode is left out"
fi

if [ "$DEVICE" != cpu ]; then
    stamp "gpu tests"
    timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/ihuman_kernels tests/engine/training/test_device.py \
        > "$OUT/gpu_tests.log" 2>&1; tail -3 "$OUT/gpu_tests.log"
fi
stamp "done"
