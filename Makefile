# Lepton's developer entry points. `make demo` runs the main job, `make test` the tests;
# both set up everything they need on a fresh machine (virtualenv, Python packages, the
# Go-built Kubernetes tools), so a newcomer runs nothing else first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help venv tools system-deps test test-fast lint bench demo gpu-check crds clean

help:
	@echo "make demo       bring up the local control plane with a GPU fleet and show it"
	@echo "make test       run every test, end-to-end included"
	@echo "make test-fast  the tests that need no cluster, no tools and no image (the edit-test loop)"
	@echo "make lint       ruff, ruff format --check, mypy, import-linter"
	@echo "make bench      benchmarks (JSON + PNG under results/)"
	@echo "make gpu-check  check the NVML exporter on a real NVIDIA GPU (energy, power limit, a shared GPU's split)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Lepton needs Python 3.11+, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: Prometheus, and buildah + debootstrap for the image build.
# Installed when missing and run as root; otherwise the command to run is printed.
SYSTEM_PACKAGES := prometheus buildah debootstrap
system-deps:
	@missing=""; for c in $(SYSTEM_PACKAGES); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "[deps] installing$$missing (Debian packages)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	  else \
	    echo "missing:$$missing — run 'sudo apt-get install --no-install-recommends$$missing'" >&2; exit 1; \
	  fi; \
	fi

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm,
# built from their Go modules into ~/.cache/lepton (once; later runs reuse them).
tools: venv
	$(BIN)/lepton tools build

test: venv system-deps tools
	$(BIN)/pytest

# No control plane, no Go-built tools, no image build: tests marked e2e (or using the
# cluster fixtures, which conftest marks e2e), tools and slow are left to `make test`.
test-fast: venv
	$(BIN)/pytest -m "not e2e and not tools and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv system-deps tools
	$(BIN)/python -m bench

demo: venv system-deps tools
	$(BIN)/lepton demo

gpu-check: venv
	$(BIN)/python -m lepton_exporter.gpucheck

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache results
