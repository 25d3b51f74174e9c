# make demo: set up and scan the built-in lab; make test: set up and run the suite; make check: the fast unit tests;
# make lint: the import contracts, ruff and mypy.
# All work on a fresh machine; the venv has the test and lab extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo

.PHONY: demo test check lint venv bench clean docs screenshot

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lab]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hma-check demo --out $(OUT); status=$$?; \
	  echo "exit code $$status; report: $(OUT)/report.html"; \
	  if [ $$status -eq 2 ] || [ $$status -eq 4 ]; then exit $$status; fi

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# Two workers, as the suite: at 879 tests they finish in ~21 s on two cores against ~25 s in one process.
check: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m unit tests/contract tests/evaluate tests/render tests/util

# The rules as tools: the import contracts (pyproject [tool.importlinter]), ruff and mypy.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check
	$(BIN)/mypy hma_check

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The README's picture of the report: the lab's one-misconfigured-server organisation, scanned and reported, then the
# first screen (1440x900) as headless Chromium draws it. Regenerate it after changing the report.
SHOT_OUT := out/screenshot
CHROMIUM ?= $(or $(HMA_CHECK_CHROMIUM),chromium)
screenshot: $(STAMP)
	$(BIN)/hma-check demo --scenario one-server-mapi-no-oauth --out $(SHOT_OUT); test $$? -le 3
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
	  --user-data-dir=$(SHOT_OUT)/profile --window-size=1440,900 \
	  --screenshot=$(abspath docs/report.png) file://$(abspath $(SHOT_OUT)/report.html)
	rm -rf $(SHOT_OUT)/profile

docs: $(STAMP)
	$(BIN)/python -m hma_check.contract.sources > docs/sources.md

clean:
	rm -rf $(VENV) out build dist .pytest_cache
