# flywheel: `make help` (the default) lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    := .venv
LSVENV  := .venv-labelstudio
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
PYTEST_ARGS ?=
# CRD files for the offline checks of custom resources: `make crds` fetches them into
# build/crds; a checkout with ../shared/crds beside it (CI) uses those.
CRDS_DIR ?= $(if $(wildcard ../shared/crds/*.yaml),../shared/crds,build/crds)
export FLYWHEEL_CRDS_DIR ?= $(abspath $(CRDS_DIR))
DRY_RUN ?=

.PHONY: help setup up down status logs demo test test-fast lint format pipelines bench \
        deploy undeploy crds clean drift report rehearsal

help: ## show this menu
	@awk 'BEGIN {FS = ":.*## "; printf "flywheel: make <target>\n\n"} \
	  /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## --- setup ---------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@# torch first: a CPU wheel here (pip would otherwise pull a multi-GB CUDA build)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

$(LSVENV)/.installed: infra/local/label-studio-requirements.txt
	@test -d $(LSVENV) || $(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/pip install -q --disable-pip-version-check -r $<
	@touch $@

setup: $(VENV)/.installed $(LSVENV)/.installed ## create the environments (idempotent; a second run does nothing)
	@cp -n .env.example .env 2>/dev/null || true
	@echo "setup done: $(VENV) (platform), $(LSVENV) (Label Studio server)"

## --- local services ------------------------------------------------------------------
up: setup ## start MLflow, Label Studio and the other local services; print their URLs
	$(BIN)/flywheel up

down: ## stop the local services (data under .flywheel/ is kept)
	@if [ -x $(BIN)/flywheel ]; then $(BIN)/flywheel down; else echo "nothing to stop"; fi

status: ## show each local service's state, pid, port and URL
	$(BIN)/flywheel status

logs: ## show the tail of each service's log (SERVICE=name for one)
	$(BIN)/flywheel logs $(SERVICE)

## --- the flywheel -----------------------------------------------------------------------
demo: setup ## set up, start the services and turn the flywheel on the demo data
	$(BIN)/flywheel up
	$(BIN)/flywheel demo

pipelines: setup ## compile the Kubeflow pipelines to IR YAML under build/pipelines
	$(BIN)/flywheel loop compile

drift: setup ## compare recent served inputs with the champion's training set (HTML report)
	$(BIN)/flywheel monitor drift

report: setup ## write the loop-health page (.flywheel/data/report.html)
	$(BIN)/flywheel report

bench: setup ## run the benchmarks in bench/ (ratios against a same-run baseline)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## --- quality ----------------------------------------------------------------------------
test: setup ## set up and run the whole test suite (real services on loopback ports)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup ## ruff over the code
	$(BIN)/ruff check src components pipelines tests bench
	$(BIN)/ruff format --check src components pipelines tests bench

format: setup ## ruff format and autofix
	$(BIN)/ruff format src components pipelines tests bench
	$(BIN)/ruff check --fix src components pipelines tests bench

## --- cluster ----------------------------------------------------------------------------
deploy: setup ## install on the cluster in KUBECONFIG (DRY_RUN=1: render and check offline)
	$(BIN)/flywheel deploy $(if $(DRY_RUN),--dry-run,)

undeploy: setup ## remove the flywheel release from the cluster
	$(BIN)/flywheel undeploy

rehearsal: setup ## rehearse one cluster turn here: the chart's datastores, each IR task as a pod
	$(BIN)/python -m flywheel.rehearsal $(if $(WORK),--work $(WORK),)

crds: setup ## fetch the pinned upstream CRDs (sha256-checked) into build/crds for deploy --dry-run
	$(BIN)/flywheel crds download

clean: down ## remove the environments and build outputs (keeps .flywheel/ data)
	rm -rf $(VENV) $(LSVENV) build
