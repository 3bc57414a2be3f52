# RPS: every target documents itself; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell bash scripts/bootstrap-uv.sh)
RUN := $(UV) run --frozen

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: ## Create .venv with every extra and the dev tools (uv, from the lock)
	$(UV) sync --frozen --all-extras

.PHONY: run
run: install ## The main job on the embedded default (replayed real weather, local state)
	$(RUN) rps run

.PHONY: test
test: install ## The whole test suite with coverage (slow tests included)
	$(RUN) pytest --cov --cov-report=term --cov-report=xml --cov-fail-under=80

.PHONY: test-fast
test-fast: install ## The suite without the slow tests
	$(RUN) pytest -m "not slow and not system"

.PHONY: lint
lint: install ## ruff lint + format check, mypy
	$(RUN) ruff check src tests airflow bench
	$(RUN) ruff format --check src tests airflow bench
	$(RUN) mypy

.PHONY: format
format: install ## Apply ruff fixes and formatting
	$(RUN) ruff check --fix src tests airflow bench
	$(RUN) ruff format src tests airflow bench

.PHONY: bench
bench: install ## Run the benchmarks and rewrite docs/BENCHMARKS.md sections
	$(RUN) python bench/bench_train.py
	$(RUN) python bench/bench_serving.py

.PHONY: clean-state
clean-state: ## Delete the embedded default's local state (.rps/)
	rm -rf .rps
