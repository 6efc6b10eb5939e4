#!/usr/bin/env bash
# One call on a lent GPU machine: fine-tune the demo bundle's LR-A2V there, check the engine runs
# on CUDA, and run the GPU tests. Everything it learns lands in $OUT (logs, JSON, the weights).
#
#   1. speed probe: the same `ihuman train lr-a2v` for a few steps in bf16 autocast and in fp32, to
#      size the real run to the time left (the cosine schedule needs its length up front);
#   2. the run: `ihuman train lr-a2v --out RUN --data DATA --device cuda` from the shipped weights
#      (fine-tuning: the exported bundle has no optimizer state), ended by --time-limit at the latest;
#   3. `ihuman render` of 4 s on CUDA with the new weights (the Triton kernels compiled for real);
#   4. `pytest -m gpu` with TRITON_INTERPRET=0 (the kernels and every training task on CUDA).
#
# The machine has no internet and no espeak-ng: the clips come as $CARRY/data.tar.xz (from `ihuman
# data make`), PyAV and webrtcvad unpacked in $CARRY/site.tar.xz when the image lacks them, and
# held-out evaluation (which synthesises speech) runs back on the developer machine.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
CARRY=${CARRY:-.carry}
PY=${PY:-python3}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
BATCH=${BATCH:-32}
LR=${LR:-4e-4}
WORKERS=${WORKERS:-12}
BUNDLE=${BUNDLE:-engine/assets/demo}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script itself
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 TQDM_MININTERVAL=20 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee "$OUT/session.log") 2>&1
stamp() { echo "== $(date +%T) $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if ! "$PY" -c "import av, webrtcvad" 2>/dev/null; then
    mkdir -p /tmp/site && tar -xJf "$CARRY/site.tar.xz" -C /tmp/site || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
DATA=/tmp/ihuman-data
mkdir -p "$DATA" && tar -xJf "$CARRY/data.tar.xz" -C "$DATA" || exit 1
echo "clips: $(ls "$DATA" | wc -l)"

train() {  # train OUT_DIR STEPS PRECISION [extra args]
    local out=$1 steps=$2 precision=$3
    shift 3
    rm -rf "$out" && cp -r "$BUNDLE" "$out"
    "$PY" -m ihuman train lr-a2v --out "$out" --data "$DATA" --device "$DEVICE" --precision "$precision" \
        --steps "$steps" --batch "$BATCH" --lr "$LR" --workers "$WORKERS" --eval-clips 0 "$@"
}
steps_per_second() {  # from a run's log: steps between its second and last rows over their time
    "$PY" - "$1/train_lr-a2v.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
if len(rows) < 3:
    sys.exit(f"{sys.argv[1]}: {len(rows)} log rows, too few to time the probe")
a, b = rows[1], rows[-1]
print(f"{(b['step'] - a['step']) / (b['seconds'] - a['seconds']):.3f}")
EOF
}

stamp "speed probe"
train /tmp/probe-bf16 60 bf16 --checkpoint-every 1000 | tail -2
train /tmp/probe-fp32 40 fp32 --checkpoint-every 1000 | tail -2
BF16=$(steps_per_second /tmp/probe-bf16) || exit 1
FP32=$(steps_per_second /tmp/probe-fp32) || exit 1
echo "{\"batch\": $BATCH, \"steps_per_s_bf16\": $BF16, \"steps_per_s_fp32\": $FP32}" | tee "$OUT/probe.json"
STEPS=$("$PY" -c "print(max(200, int($BF16 * $TRAIN_SECONDS)))")

stamp "fine-tune: $STEPS steps"
LIMIT=$("$PY" -c "print($TRAIN_SECONDS * 1.1 / 60)")
train /tmp/run "$STEPS" bf16 --checkpoint-every 500 --time-limit "$LIMIT" | tail -3
cp /tmp/run/lr_a2v.safetensors /tmp/run/train_lr-a2v.jsonl "$OUT/"

stamp "render on CUDA"
timeout 120 "$PY" -m ihuman render --bundle /tmp/run --device "$DEVICE" --image "$BUNDLE/avatars/demo-1.png" \
    --audio tests/fixtures/procedural/clip_001000/audio.wav --out /tmp/render.mp4 --no-face-check | tail -2

stamp "GPU tests"
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/ihuman_kernels tests/engine/training/test_device.py \
    2>&1 | tail -25
stamp "done"
