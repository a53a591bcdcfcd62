# Two commands do all set-up on a fresh machine with Python 3.11:
#   make run    create .venv, install, train on the embedded sample, build the bento, serve it
#   make test   create .venv, install, run the test suite (what .ci/run calls)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEPLOY_VENV := .venv-deploy
DEPLOY_INSTALLED := $(DEPLOY_VENV)/.installed
PORT ?= 3000

.PHONY: install deploy-tools train build serve run test test-fast promtool benchmark load-benchmark image image-test clean

$(INSTALLED): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

$(DEPLOY_INSTALLED): requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet -r requirements-deploy.txt
	touch $@

deploy-tools: $(DEPLOY_INSTALLED)

train: install
	$(BIN)/python train.py

build: train
	$(BIN)/bentoml build

serve: install
	$(BIN)/bentoml serve service:CreditPDService --port $(PORT)

run: build serve

test: install deploy-tools promtool
	$(BIN)/python -m pytest

# promtool (Debian package `prometheus`) checks and unit-tests the chart's drift rules
# (tests/monitoring/test_rules.py); without it those tests skip and say why.
promtool:
	@command -v promtool >/dev/null || { echo "installing promtool (Debian package prometheus) for the rule tests"; \
	  if [ "$$(id -u)" = 0 ]; then (apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }) \
	    || echo "note: could not install prometheus (promtool); the rule tests will skip"; \
	  else echo "note: not root, so promtool is not installed (the rule tests skip and say why)"; fi; }

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

benchmark: install
	$(BIN)/python -m benchmarks.training_benchmark

load-benchmark: build
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the load benchmark"; \
		apt-get install -y wrk >/dev/null 2>&1 || sudo apt-get install -y wrk; }
	$(BIN)/python -m benchmarks.load_benchmark

# OCI image with podman from the latest bento, on a Debian base built from Debian packages
# (scripts/build_base_image.sh; no registry needed). See docs/image.md.
image: build
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc debootstrap uidmap fuse-overlayfs slirp4netns; }
	PYTHON=$(BIN)/python BENTOML=$(BIN)/bentoml bash scripts/build_image.sh

# Builds the real image and runs it (tests/deploy/test_image.py; opt-in, not part of `make test`).
image-test: install
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc debootstrap uidmap fuse-overlayfs slirp4netns; }
	bash scripts/build_base_image.sh
	CREDIT_PD_IMAGE_TEST=1 $(BIN)/python -m pytest tests/deploy/test_image.py -m integration -v -s

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) reports build .pytest_cache
