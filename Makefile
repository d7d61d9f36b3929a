# dicomlab — the two commands are `make demo` and `make test`; everything else is a building block
# (CI runs `make test`, then `make deploy-smoke`: .ci/run).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FRONTEND := services/dicomlab_labeling/frontend
FRONTEND_STAMP := services/dicomlab_labeling/static/dist/manifest.json

.PHONY: help deps container-deps venv frontend lint typecheck pytest test test-fast demo bench lock clean images deploy-smoke deploy-smoke-clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps:  ## Debian packages: Orthanc + DICOMweb + PostgreSQL plugin, PostgreSQL, dcmtk, Chromium, nginx, Prometheus
	@scripts/install-system-deps.sh

container-deps:  ## podman, buildah, runc, debootstrap + /etc/containers settings (only for images and deploy-smoke)
	@scripts/install-system-deps.sh --containers

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip>=24'
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)  ## the virtualenv with the project and its test extras (locked by constraints.txt)

frontend: venv  ## build the Cornerstone3D viewer bundle (npm ci + vite build), when the sources are present
	@if [ -f $(FRONTEND)/package.json ]; then $(BIN)/python scripts/build_frontend.py; else echo "frontend: no sources yet"; fi

lint: venv  ## ruff, and import-linter's layer contracts (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check services training tests benchmarks scripts
	$(BIN)/lint-imports

typecheck: venv  ## mypy, strict on our packages
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest

test: deps venv frontend lint typecheck pytest  ## everything CI runs: install, lint, type-check, tests

FAST_MARKERS := not browser and not slow and not e2e and not chart

test-fast: venv lint  ## the quick loop: lint, then the tests without browser, end-to-end or chart tools
	$(BIN)/pytest -m "$(FAST_MARKERS)"

demo: deps venv frontend  ## run the whole loop on the local stack and print where to look (LOOP=1: + active learning)
	$(BIN)/dicomlab demo $(if $(filter 1 yes true,$(LOOP)),--loop)

images: container-deps frontend  ## build every image with podman (a local Debian base when no registry answers)
	@scripts/images.sh

deploy-smoke: deps venv frontend  ## CI, after `make test`: build every image, run the chart's workloads under podman like a kubelet, drive the loop through them
	@scripts/deploy-smoke.sh

deploy-smoke-clean:  ## remove whatever a deploy-smoke run left (containers, network, host folders)
	PYTHONPATH=scripts $(BIN)/python -m deploy_smoke --cleanup

bench: deps venv  ## run the benchmarks (results in benchmarks/results/)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --write || exit 1; done

lock:  ## re-resolve constraints.txt from pyproject.toml in a scratch venv
	rm -rf /tmp/dicomlab-lock && $(PYTHON) -m venv /tmp/dicomlab-lock
	/tmp/dicomlab-lock/bin/pip install -q -e '.[test]'
	/tmp/dicomlab-lock/bin/pip freeze --exclude-editable | grep -v '^dicomlab' > constraints.txt

clean:  ## stop the local stack and remove build outputs (keeps .venv)
	-$(BIN)/dicomlab stack down
	rm -rf .run .demo build services/dicomlab_labeling/static/dist
