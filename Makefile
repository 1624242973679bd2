# ComfyUI-Gen4D developer commands. Everything installs into .venv from nothing.
#   make test   install, then run the CPU test suite
#   make demo   install, then run the CoCo4D workflow on the synthetic scene world, headless (outputs/demo/)
#   make lint   ruff
#   make lock   re-resolve the newest versions requirements allow, write requirements-lock.txt, run the suite
#   make test-fuzz   the whole fuzz table over every node (bad inputs, widget maxima, files, cancel, seeds)
#   make test-browser   headless chromium test of the 4D viewer (installs chromium + playwright-core)
#   make test-splat-client   our PLY/SPZ/glTF frames opened by splat-transform and glTF-Transform (npm)
#   make workflow-shots     open every example workflow in real ComfyUI's frontend: screenshots, thumbnails, sizes
#   make check-workflows    real ComfyUI queues every weight-free workflow as shipped and the native-model graphs
#                           on tiny models (COMFYUI_PATH, COMFYUI_PYTHON)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
LOCK   := requirements-lock.txt
STAMP  := $(VENV)/.installed

.PHONY: install test test-fuzz demo lint lock bench-render clean test-browser test-splat-client workflow-shots check-workflows

install: $(STAMP)

# torch goes in first, pinned (a CPU build where there is no CUDA), and stays pinned for every
# later install so nothing pulls another torch or CUDA packages. torchvision is never needed.
# Everything else comes at the versions of $(LOCK), the ones the suite last passed with, so a fresh
# clone next month tests what was tested today; requirements.txt itself stays open for ComfyUI users.
$(STAMP): requirements.txt requirements-dev.txt $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c $(LOCK) "$(TORCH)"
	$(BIN)/python -c "import torch, numpy, safetensors, PIL, imageio_ffmpeg, pytest; print('torch', torch.__version__)"
	touch $(STAMP)

# One worker per core; a test module stays on one worker so its module fixtures are built once.
TEST_JOBS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

test-fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "fuzz_long or not fuzz_long" tests/fuzz
	$(BIN)/python tests/fuzz/report.py --long

demo: $(STAMP)
	$(BIN)/python tools/run_workflow.py example_workflows/CoCo4D_synthetic.json --out outputs/demo

# Browser test of web/gen4d_viewer.js: Debian chromium (SwiftShader) + playwright-core, localhost only.
# Kept out of `make test`: chromium comes from apt (root + network to the Debian mirror).
CHROMIUM ?= /usr/bin/chromium
test-browser: $(STAMP)
	test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	test -d tests/browser/node_modules/playwright-core || (cd tests/browser && npm install --no-audit --no-fund)
	$(BIN)/python tests/browser/make_fixtures.py
	CHROMIUM=$(CHROMIUM) PYTHON=$(abspath $(BIN)/python) node tests/browser/viewer.test.mjs

# Independent readers of Save Scene's per-frame files: PlayCanvas splat-transform (PLY, SPZ) and
# glTF-Transform (.glb with KHR_gaussian_splatting), from npm. Kept out of `make test`: it needs npm.
test-splat-client: $(STAMP)
	test -d tests/splat_client/node_modules/@playcanvas/splat-transform || (cd tests/splat_client && npm install --no-audit --no-fund)
	$(BIN)/python tests/splat_client/check.py

# Real ComfyUI (COMFYUI_PATH, its python in COMFYUI_PYTHON) with its own frontend in headless chromium.
workflow-shots: $(STAMP)
	test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	test -d tests/browser/node_modules/playwright-core || (cd tests/browser && npm install --no-audit --no-fund)
	CHROMIUM=$(CHROMIUM) $(BIN)/python tools/workflow_shots.py --out outputs/workflow_shots --thumbnails --sizes

check-workflows: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_comfyui_integration.py tests/test_comfy_native.py

# A throwaway venv resolves the newest versions the requirements allow; its freeze becomes the lock,
# then the project venv is rebuilt from the new lock and the suite runs on it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "$(TORCH)"
	.venv-lock/bin/python -m pip install --quiet -r requirements-dev.txt "$(TORCH)"
	{ sed -n '1,2p' $(LOCK); .venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock $(VENV)
	$(MAKE) test

lint: $(STAMP)
	$(BIN)/ruff check .

bench-render: $(STAMP)
	$(BIN)/python bench/render_speed.py

clean:
	rm -rf $(VENV) .venv-lock outputs .pytest_cache
