#!/usr/bin/env bash
# One call on a lent GPU machine: how fast the paper preset runs (random weights: speed does not
# depend on their values). The steps run the most important first, each under its own time limit
# so that a failure or a hang costs only that step; $OUT holds the log and results.tgz (JSON and
# plots of every step), packed again after each step: a call stopped at its limit still returns
# what was measured.
#
#   - `python -m ihuman.bench.ceilings`: the card's bf16 matrix rate and copy bandwidth (always);
#   - latency_compiled / latency: `ihuman bench latency --mode engine` for $RUN_SECONDS at bf16
#     (the default on CUDA), with and without --compile: fps, added latency p50/p99, first frame,
#     per-stage times, the refine time hidden under low-res work, peak GPU memory;
#   - pieces_compiled / pieces: `python -m ihuman.bench.stages`, each piece of a segment alone,
#     wall and GPU time, TFLOP/s, and torch.profiler's kernel table;
#   - kernels: `python -m ihuman.bench.kernels`, attention TFLOP/s against SDPA's flash and cuDNN
#     backends, with the launch settings tuned per shape;
#   - tests: `pytest -m gpu` on the kernels, their tuning candidates, the bf16 and compiled stages;
#   - latency_torch: the engine with IHUMAN_KERNELS=reference (SDPA with dense masks);
#   - pieces_fp32: the pieces in fp32, what bf16 buys.
#
# The machine has no internet: PyAV, webrtcvad and pytorch-msssim travel as wheels in .whl
# (`carry: [".whl"]`; how to fetch them: docs/perf.md). Dry run on a CPU first (a typo must not
# cost GPU time):
#   DEVICE=cpu PRESET=tiny RUN_SECONDS=5 bash ihuman/bench/gpu_paper.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
RUN_SECONDS=${RUN_SECONDS:-40}
AUDIO=${AUDIO:-tests/fixtures/procedural/clip_001000/audio.wav}  # the machine has no espeak-ng
RES=${RES:-/tmp/gpu-results}
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$DEVICE" = cpu ] || export TRITON_INTERPRET=0
exec > >(tee "$OUT/session.log") 2>&1
stamp() {
    tar czf "$OUT/results.tgz.part" -C "$RES" . && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
    echo "== $(date +%T) $*"
}
IHUMAN=("$PY" -m ihuman)

stamp "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
if [ -d .whl ] && ! "$PY" -c "import av, webrtcvad, pytorch_msssim" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$PY" -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)"

stamp "ceilings"
if [ "$DEVICE" = cpu ]; then
    "$PY" -m ihuman.bench.ceilings --size 512 --copy-mib 64 --runs 3 --out "$RES/ceilings.json" | tail -12
else
    timeout 60 "$PY" -m ihuman.bench.ceilings --out "$RES/ceilings.json" | tail -12
fi

latency() {  # latency NAME SECONDS [env ...] [-- bench options]: one engine-mode run into $RES/NAME
    local name=$1 seconds=$2 envs=() opts=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    [ $# -gt 0 ] && shift && opts=("$@")
    stamp "latency, engine mode ($PRESET, $seconds s, $name)"
    env "${envs[@]}" timeout $((seconds + 200)) "${IHUMAN[@]}" bench latency --mode engine --preset "$PRESET" \
        --random-weights --device "$DEVICE" --seconds "$seconds" --audio "$AUDIO" --out "$RES/$name" "${opts[@]}"
}

pieces() {  # pieces NAME SEGMENTS [options]: ihuman.bench.stages into $RES/NAME.json
    local name=$1 segments=$2
    shift 2
    stamp "segment pieces ($PRESET, $name)"
    timeout 150 "$PY" -m ihuman.bench.stages --preset "$PRESET" --segments "$segments" --out "$RES/$name.json" \
        "$@" | tail -40
}

kernels() {
    stamp "attention kernels"
    if [ "$DEVICE" = cpu ]; then
        TRITON_INTERPRET=1 "$PY" -m ihuman.bench.kernels --smoke --runs 2 --warmup 1 --out "$RES/attention.json" \
            | tail -3
    else
        timeout 90 "$PY" -m ihuman.bench.kernels --out "$RES/attention.json" | tail -3
    fi
}

gpu_tests() {
    [ "$DEVICE" = cpu ] && return
    stamp "gpu tests"
    timeout 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider ${TESTS_K:+-k "$TESTS_K"} tests/ihuman_kernels \
        tests/engine/generation/test_stages.py > "$RES/gpu_tests.log" 2>&1
    tail -5 "$RES/gpu_tests.log"
}

# The steps, most telling first; STEPS="..." runs a subset (a second call in the same lease), and
# TESTS_K="..." picks GPU tests by name (pytest -k).
for step in ${STEPS:-latency_compiled pieces_compiled latency pieces kernels tests latency_torch pieces_fp32}; do
    case $step in
        latency_compiled) latency latency_compiled "$RUN_SECONDS" -- --compile ;;
        pieces_compiled) pieces pieces_compiled 6 --compile --profile "$RES/profile_compiled.txt" ;;
        latency) latency latency_bf16 "$RUN_SECONDS" ;;
        pieces) pieces pieces_bf16 6 --profile "$RES/profile_bf16.txt" ;;
        kernels) kernels ;;
        tests) gpu_tests ;;
        latency_torch) latency latency_torch_kernels $((RUN_SECONDS / 2)) IHUMAN_KERNELS=reference ;;
        pieces_fp32) pieces pieces_fp32 3 --precision fp32 ;;
        *) echo "unknown step $step" ;;
    esac
done
stamp "done"
