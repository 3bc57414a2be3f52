# RPS: every target documents itself; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell bash scripts/bootstrap-uv.sh)
RUN := $(UV) run --frozen
# uv on PATH for everything make runs (bootstrap-uv.sh may install it into ~/.local/bin, which a
# fresh Debian login does not have on PATH; `mlflow models serve --env-manager uv` needs it there)
export PATH := $(patsubst %/,%,$(dir $(UV))):$(PATH)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: ## Create .venv with every extra and the dev tools (uv, from the lock)
	$(UV) sync --frozen --all-extras

.PHONY: run
run: install ## The main job on the embedded default (replayed real weather, local state)
	$(RUN) rps run

.PHONY: demo-drift
demo-drift: install ## The main job, then drifted traffic: watch DataDriftDetected fire and retrain
	$(RUN) rps run --demo-drift

.PHONY: demo-loop
demo-loop: install ## The closed loop on an accelerated clock: drift -> alert -> retrain -> new champion
	$(RUN) rps demo-loop

.PHONY: test
test: install ## The whole test suite with coverage (slow tests included), on 2 xdist workers
	$(RUN) pytest -n 2 --dist loadgroup --cov --cov-report=term --cov-report=xml --cov-fail-under=80

.PHONY: test-fast
test-fast: install ## The suite without the slow tests
	$(RUN) pytest -m "not slow and not system"

.PHONY: test-production
test-production: install ## The production topology natively: PostgreSQL, S3, MLflow, Airflow (Local+Celery)
	$(RUN) pytest -m production -p no:cacheprovider tests/production

.PHONY: lint
lint: install ## ruff lint + format check, mypy (src/rps, monitoring/, notebooks/)
	$(RUN) ruff check src tests airflow bench monitoring notebooks
	$(RUN) ruff format --check src tests airflow bench monitoring notebooks
	$(RUN) mypy
	$(RUN) mypy monitoring notebooks

.PHONY: format
format: install ## Apply ruff fixes and formatting
	$(RUN) ruff check --fix src tests airflow bench monitoring notebooks
	$(RUN) ruff format src tests airflow bench monitoring notebooks

.PHONY: bench
bench: install ## Run the benchmarks and rewrite docs/BENCHMARKS.md sections
	$(RUN) python bench/bench_train.py
	$(RUN) python bench/bench_dag.py
	$(RUN) python bench/bench_serving.py
	$(RUN) python bench/bench_drift.py

.PHONY: clean-state
clean-state: ## Delete the embedded default's local state (.rps/)
	rm -rf .rps

# --- container image and the CI/CD workflows, run locally ------------------------------------
# podman without a Docker daemon (this project's machines): chroot builds, runc, host network,
# a dedicated image store under /var/tmp/rps-containers, and the local Debian base image.
CONTAINER_FLAGS ?= --engine podman --sandbox
BASE_IMAGE ?= localhost/bookworm-python:local
IMAGE ?= rps-api:dev
CI_LOCAL_STATE := $(CURDIR)/.rps/ci-local
CI_LOCAL_IMAGE ?= rps-api:ci-local
CI_LOCAL_CONTAINER ?= rps-api-ci-local
CI_LOCAL_PORT ?= 18080

.PHONY: image
image: install ## Build the serving image IMAGE (fetches the champion into model/ when missing)
	$(RUN) rps deploy build --tag $(IMAGE) $(CONTAINER_FLAGS) --base-image $(BASE_IMAGE)

.PHONY: ci-local
ci-local: export RPS_STATE_DIR = $(CI_LOCAL_STATE)
ci-local: install ## ci-dev, ci-test and cd-production steps here, in order, without pushing
	@echo "== ci-dev: lint, fast tests (state in $(CI_LOCAL_STATE))"
	$(MAKE) lint
	$(MAKE) test-fast
	@echo "== ci-test: DAG run without promotion, challenger vs champion"
	$(RUN) rps model info champion >/dev/null 2>&1 || \
	  $(RUN) rps dag run --end $$(date -u -d '7 days ago' +%Y-%m-%dT%H:00:00Z) --reason ci-local-baseline
	$(RUN) rps dag run --no-promote --reason ci-local
	@mkdir -p $(CI_LOCAL_STATE)
	@$(RUN) rps model compare --candidate challenger --against champion \
	    --output $(CI_LOCAL_STATE)/report.md || \
	  { echo "ci-local: the challenger is worse than the champion; report: $(CI_LOCAL_STATE)/report.md"; exit 1; }
	@echo "== cd-production: promote the challenger, fetch the champion, build, run, verify, stop (nothing is pushed)"
	@challenger=$$($(RUN) rps model info challenger | jq -r .version) && \
	  champion=$$($(RUN) rps model info champion | jq -r .version) && \
	  if [ "$$challenger" != "$$champion" ]; then \
	    $(RUN) rps model promote $$challenger --reason "ci-local: challenger compared with v$$champion"; fi
	set -o pipefail; $(RUN) rps deploy fetch-model --ref champion --dest $(CI_LOCAL_STATE)/model \
	  | tee $(CI_LOCAL_STATE)/fetch.txt
	$(RUN) rps deploy build --no-fetch --model-dir $(CI_LOCAL_STATE)/model --tag $(CI_LOCAL_IMAGE) \
	  $(CONTAINER_FLAGS) --base-image $(BASE_IMAGE)
	$(RUN) rps deploy run --image $(CI_LOCAL_IMAGE) --name $(CI_LOCAL_CONTAINER) \
	  --port $(CI_LOCAL_PORT) $(CONTAINER_FLAGS)
	@version=$$(sed -n 's/^version=//p' $(CI_LOCAL_STATE)/fetch.txt); status=0; \
	  $(RUN) rps deploy verify --url http://127.0.0.1:$(CI_LOCAL_PORT) --expect-version $$version \
	    --model-dir $(CI_LOCAL_STATE)/model || status=$$?; \
	  $(RUN) rps deploy stop --name $(CI_LOCAL_CONTAINER) $(CONTAINER_FLAGS); \
	  exit $$status
