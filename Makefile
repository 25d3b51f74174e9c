# make demo: set up and scan the built-in lab; make test: set up and run the suite; make check: the fast unit tests.
# All work on a fresh machine; the venv has the test and lab extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo

.PHONY: demo test check venv bench clean docs

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

# One process: for a run this short, starting xdist workers costs more than it saves.
check: $(STAMP)
	$(BIN)/python -m pytest -q -m unit tests/contract tests/evaluate tests/render tests/util

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

docs: $(STAMP)
	$(BIN)/python -m hma_check.contract.sources > docs/sources.md

clean:
	rm -rf $(VENV) out build dist .pytest_cache
