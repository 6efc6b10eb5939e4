#!/usr/bin/env bash
# One call on a lent GPU machine: train the demo bundle's two generators there, from the shipped
# weights, on procedural characters rendered there by its 16 cores. Everything it learns lands in
# $OUT (the log, the probe's rates, each part's weights and training log), copied after each part:
# a call stopped at its limit still returns what was trained.
#
#   1. LR-A2V: $LR_WINDOWS new training windows (seeds from $SEED, apart from the CPU run's) rendered
#      by $WORKERS loader workers and encoded once on the GPU (--latent-cache), a probe of
#      $PROBE_STEPS steps to time a step, then a cosine schedule sized to $LR_SECONDS (--time-limit
#      stops it at the latest), fine-tuning the shipped weights (a new optimizer: the exported
#      bundle has none);
#   2. the PG-Refiner, from the shipped (untrained) one, the same way: $REF_WINDOWS windows at HR
#      encoded once with their pose rasters (the truth's, or the pose head's for half of them),
#      then sized to $REF_SECONDS or what is left of $BUDGET;
#   3. the GPU tests of the attention kernels and their tuning candidates, in what time is left.
#
# Held-out evaluation runs back on the developer machine (`ihuman eval ...`, docs/demo.md).
# The machine has no internet: PyAV and friends travel as wheels in .whl, espeak-ng (the speech of
# the procedural clips) as Debian packages in .espeak, unpacked under /tmp, with `pcaudio_stub`
# built there (or, without a C compiler, .espeak/libpcaudio.so.0, built here by it). How to fetch
# both: docs/demo.md, "Training on a lent GPU". Carry [".whl", ".espeak"]. Dry run on a CPU first:
#   DEVICE=cpu WORKERS=2 LR_WINDOWS=64 LR_BATCH=8 LR_SECONDS=20 REF_WINDOWS=48 REF_BATCH=4 \
#       REF_SECONDS=30 PROBE_STEPS=40 TEST_SECONDS=0 bash ihuman/bench/gpu_finetune.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BUNDLE=${BUNDLE:-engine/assets/demo}
WORK=${WORK:-/tmp/ihuman-finetune}
WORKERS=${WORKERS:-15}
SEED=${SEED:-300000}
PROBE_STEPS=${PROBE_STEPS:-60}
BUDGET=${BUDGET:-540}  # seconds for the whole script: the refiner and the tests get what is left
LR_WINDOWS=${LR_WINDOWS:-5000}
LR_BATCH=${LR_BATCH:-64}
LR_RATE=${LR_RATE:-4e-4}
LR_SECONDS=${LR_SECONDS:-150}
REF_WINDOWS=${REF_WINDOWS:-3000}
REF_BATCH=${REF_BATCH:-16}
REF_RATE=${REF_RATE:-4e-4}
REF_SECONDS=${REF_SECONDS:-130}
TEST_SECONDS=${TEST_SECONDS:-45}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$DEVICE" = cpu ] || export TRITON_INTERPRET=0
exec > >(tee "$OUT/session.log") 2>&1
stamp() { echo "== $(date +%T) $*"; }
START=$(date +%s)
left() { echo $((START + BUDGET - $(date +%s))); }  # seconds of the budget left

stamp "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -d .whl ] && ! "$PY" -c "import av, webrtcvad, pytorch_msssim" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
# espeak-ng links libpcaudio (audio output through ALSA and PulseAudio, absent there); speech goes
# to stdout here, so a library of its eight entry points that open nothing stands in for it.
pcaudio_stub() {  # pcaudio_stub OUT.so
    cc -shared -fPIC -O2 -o "$1" -x c - <<'EOF'
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *b) { return NULL; }
int audio_object_open(struct audio_object *o, int format, unsigned rate, unsigned channels) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *data, size_t bytes) { return -1; }
int audio_object_drain(struct audio_object *o) { return -1; }
int audio_object_flush(struct audio_object *o) { return -1; }
const char *audio_object_strerror(struct audio_object *o, int error) { return "no audio output"; }
EOF
}
if ! command -v espeak-ng >/dev/null; then
    for deb in .espeak/*.deb; do dpkg -x "$deb" /tmp/espeak || exit 1; done
    lib=/tmp/espeak/usr/lib/x86_64-linux-gnu
    pcaudio_stub "$lib/libpcaudio.so.0" 2>/dev/null || cp .espeak/libpcaudio.so.0 "$lib/" || exit 1
    export PATH="/tmp/espeak/usr/bin:$PATH" LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ESPEAK_DATA_PATH="$lib"
fi
espeak-ng --version || exit 1
"$PY" -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)"

train() {  # train TASK DIR STEPS [options]: `ihuman train` from a copy of the bundle (kept if DIR exists)
    local task=$1 dir=$2 steps=$3
    shift 3
    [ -d "$dir" ] || cp -r "$BUNDLE" "$dir"
    "$PY" -m ihuman train "$task" --out "$dir" --device "$DEVICE" --steps "$steps" --seed "$SEED" \
        --workers "$WORKERS" --average 0.999 --eval-clips 0 "$@"
}
steps_for() {  # steps_for LOG SECONDS: the steps a probe's log says fit in SECONDS
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
if len(rows) < 3:
    sys.exit(f"{sys.argv[1]}: {len(rows)} log rows, too few to time the probe")
a, b = rows[1], rows[-1]  # the first row holds the warm-up
rate = (b["step"] - a["step"]) / (b["seconds"] - a["seconds"])
print(max(100, int(rate * float(sys.argv[2]))), f"{rate:.2f}")
EOF
}
run_part() {  # run_part TASK PART SECONDS [options]: probe, size, train; weights and log into $OUT
    local task=$1 part=$2 seconds=$3
    shift 3
    stamp "$task: probe of $PROBE_STEPS steps"
    train "$task" "$WORK/probe-$task" "$PROBE_STEPS" --checkpoint-every 100000 "$@" | tail -2
    read -r steps rate < <(steps_for "$WORK/probe-$task/train_$task.jsonl" "$seconds") || return 1
    echo "{\"task\": \"$task\", \"steps_per_s\": $rate, \"steps\": $steps}" | tee -a "$OUT/probe.jsonl"
    mkdir -p "$WORK/run" && [ -f "$WORK/run/config.json" ] || cp -r "$BUNDLE/." "$WORK/run"
    # The probe's encoded windows are the run's (the same parts and seed: the store's key).
    [ -f "$WORK/probe-$task/${part}_windows.safetensors" ] && \
        ln -f "$WORK/probe-$task/${part}_windows.safetensors" "$WORK/run/"
    stamp "$task: $steps steps (about $seconds s)"
    local limit
    limit=$("$PY" -c "print($seconds * 1.1 / 60)")
    train "$task" "$WORK/run" "$steps" --checkpoint-every 500 --time-limit "$limit" "$@" | tail -3
    cp "$WORK/run/$part.safetensors" "$WORK/run/train_$task.jsonl" "$OUT/"
}

run_part lr-a2v lr_a2v "$LR_SECONDS" --latent-cache "$LR_WINDOWS" --batch "$LR_BATCH" --lr "$LR_RATE"
# The refiner's probe (which encodes its windows) and start take about two minutes: it trains in
# what is left after them.
REF_SECONDS=$(( $(left) - 120 < REF_SECONDS ? $(left) - 120 : REF_SECONDS ))
if [ "$REF_SECONDS" -gt 20 ]; then
    run_part refiner refiner "$REF_SECONDS" --latent-cache "$REF_WINDOWS" --batch "$REF_BATCH" --lr "$REF_RATE"
fi

TEST_SECONDS=$(( $(left) - 5 < TEST_SECONDS ? $(left) - 5 : TEST_SECONDS ))
if [ "$TEST_SECONDS" -gt 10 ]; then
    stamp "GPU tests: attention kernels and tuning"
    timeout "$TEST_SECONDS" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/ihuman_kernels 2>&1 | tail -15
fi
stamp "done"
