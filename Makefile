# Both targets bootstrap .venv themselves on a fresh machine (Python 3.11 + pip).
# torch is installed first and pinned: `pip install torch==2.13.0` takes the local
# CPU build here, while a range would pull gigabytes of CUDA packages. --no-compile: Python
# compiles a module's bytecode when it is first imported, and the tests import a fraction of torch
# and Ray (40 s less setup on two cores).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH_VERSION := 2.13.0

.PHONY: run test test-fast lint clean system-deps fixtures contact-sheet demo demo-gpu demo-docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --progress-bar off --no-compile "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --progress-bar off --no-compile -e ".[serve,dev]"
	touch $(STAMP)

# Debian packages the tests use: espeak-ng and sox make speech, chromium is the browser of the
# end-to-end test (driven by Playwright, run in a network namespace made with iproute2's `ip`),
# ffmpeg reads media in tests.
SYSTEM_TOOLS := espeak-ng sox ffmpeg ip /usr/lib/chromium/chromium
SYSTEM_PACKAGES := espeak-ng sox ffmpeg iproute2 chromium
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || [ -x $$tool ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "please install: $(SYSTEM_PACKAGES) (Debian: sudo apt-get install ...)" >&2; exit 1; fi; \
	fi

run: $(STAMP)
	$(VENV)/bin/ihuman serve

# Two rounds: the tests that keep to the wall clock (live sessions, WebRTC, browsers, rates and
# deadlines) run alone, so that nothing beside them slows their streams; the rest run first, one
# process per core, each with one torch thread (two threads in each of two processes on two cores
# ran 2.5x slower than one process).
PARALLEL := OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile
test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PARALLEL) -m "not realtime"
	$(PY) -m pytest -m realtime

# The edit loop: everything but the tests marked slow (browser, WebRTC, overfitting, long sessions).
test-fast: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PARALLEL) -m "not slow and not realtime" -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The small procedural clips the tests read (regenerate after changing engine/data/).
fixtures: $(STAMP) system-deps
	rm -rf tests/fixtures/procedural
	$(VENV)/bin/ihuman data make --out tests/fixtures/procedural --clips 2 --seconds 3 --res 160x96 --seed 1000 --workers 1

# docs/contact_sheet.png: 16 frames of different characters, and a broken-hand pair.
contact-sheet: $(STAMP) system-deps
	$(PY) -m engine.data.contact_sheet docs/contact_sheet.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The demo bundle (tiny preset), trained on CPU from procedural data; every step resumes where an
# interrupted run stopped, so `make demo` can simply be run again. No hand ReFL: at the tiny LR
# size (hands ~6 px) the hand evaluator scores at chance, so its reward would only add noise
# (docs/demo.md). The mouth judge is the lip-sync reader no loss reads. LR-A2V and the refiner
# estimate clean latents from a picture (the still reference, the LR latents), so they stream the
# person from their first step. LR-A2V trains on 3,200 windows encoded once (--latent-cache: a
# step costs a third) and stops at a time limit (the same command resumes).
# The refiner is stored untrained (--steps 0): its one-step estimate is then the LR latents on the
# HR grid, and each refiner trained on a CPU so far made the HR frames worse than that (docs/demo.md).
DEMO ?= runs/demo
DEMO_DATA ?= data/demo
# How the demo bundle samples beyond its preset, chosen on validation characters (docs/demo.md,
# "Lip sync: the lead, and the settings tried"): written into the exported config.
DEMO_SETTINGS := --set segment.audio_lead_frames=1
TRAIN := $(VENV)/bin/ihuman train
demo: $(STAMP) system-deps
	$(VENV)/bin/ihuman data make --out $(DEMO_DATA) --clips 300 --seconds 4 --res 320x176 --seed 0
	$(TRAIN) pose   --out $(DEMO) --steps 3000 --batch 8 --lr 5e-4 --checkpoint-every 500 --eval-clips 8
	$(TRAIN) vae    --out $(DEMO) --steps 4000 --batch 8 --crop 64 --half-scale 0.5 --lr 8e-4 --data $(DEMO_DATA) --checkpoint-every 250
	$(TRAIN) mouth  --out $(DEMO) --steps 2000 --batch 8 --lr 2e-3 --checkpoint-every 250 --eval-clips 8 --data $(DEMO_DATA)
	$(TRAIN) mouth-judge --out $(DEMO) --steps 900 --batch 16 --lr 2e-3 --checkpoint-every 150 --eval-clips 8
	$(TRAIN) audio  --out $(DEMO) --steps 750 --batch 8 --lr 1e-3 --checkpoint-every 250
	$(TRAIN) lr-a2v --out $(DEMO) --steps 6000 --batch 16 --lr 5e-4 --latent-cache 3200 --workers 2 --average 0.999 --checkpoint-every 250 --time-limit 95
	$(TRAIN) hand-evaluator --out $(DEMO) --steps 800 --batch 32 --lr 1e-3 --checkpoint-every 100 --eval-clips 16
	$(TRAIN) refiner --out $(DEMO) --steps 0 --eval-clips 8
	$(VENV)/bin/ihuman export --bundle $(DEMO) --out engine/assets/demo $(DEMO_SETTINGS)

# The shipped LR-A2V was then fine-tuned on a lent GPU (ihuman/bench/gpu_finetune.sh, one call;
# docs/demo.md): 5,000 new windows, 1,666 steps of batch 64, from the exported CPU-trained weights.
# This target is that run on a CUDA machine with espeak-ng (the script sizes the steps to its time).
demo-gpu: $(STAMP) system-deps
	rm -rf $(DEMO)-gpu && $(VENV)/bin/ihuman export --bundle $(DEMO) --out $(DEMO)-gpu
	$(TRAIN) lr-a2v --out $(DEMO)-gpu --device cuda --steps 1666 --batch 64 --lr 4e-4 --latent-cache 5000 --seed 300000 --workers 15 --average 0.999 --checkpoint-every 500 --eval-clips 0
	$(VENV)/bin/ihuman export --bundle $(DEMO)-gpu --out engine/assets/demo $(DEMO_SETTINGS)

# The demo's measurements and pictures (docs/demo.md quotes them): lip sync read by the mouth judge
# (--ceiling: the same characters rendered speaking, read as rendered and through the autoencoder)
# and by the pose head's reader, fidelity and smoothness against the still reference.
PHOTOS := $(addprefix tests/fixtures/photos/,astronaut.jpg grace_hopper.jpg astronaut_far.jpg astronaut_selfie.jpg grace_hopper_print.jpg grace_hopper_wide.jpg)
demo-docs: $(STAMP)
	$(VENV)/bin/ihuman eval lipsync --bundle engine/assets/demo --characters 24 --seconds 8 --ceiling --out docs/bench/demo_lipsync_24.json
	$(VENV)/bin/ihuman eval lipsync --bundle engine/assets/demo --characters 24 --seconds 8 --reader pose --out docs/bench/demo_lipsync_24_pose.json
	$(VENV)/bin/ihuman eval fidelity --bundle engine/assets/demo --characters 12 --seconds 8 --out docs/bench/demo_fidelity_12.json
	$(VENV)/bin/ihuman eval photos --bundle engine/assets/demo --photos $(PHOTOS) --seconds 8 --out docs/bench/demo_photos.json
	$(VENV)/bin/ihuman eval identity --bundle engine/assets/demo --seconds 120 --out docs/bench/demo_identity.json --plot docs/demo_identity.png
	$(PY) -m engine.showcase --bundle engine/assets/demo --out docs
