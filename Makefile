# Targets make their own virtual environment on first use. torch is pinned and installed first,
# so that pip never pulls a multi-GB CUDA build on a CPU machine.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
OUT ?= outputs

# The book: papermill executes each notebook once (tests/test_notebooks.py keeps the executed copy
# in $(EXECUTED)/notebooks); the book is built from a staged copy of the sources in which the
# executed notebooks replace the committed ones and MathJax 3 sits in _mathjax, executing nothing.
EXECUTED := _build/executed
STAGE := _build/book-src
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED_NOTEBOOKS := $(NOTEBOOKS:notebooks/%=$(EXECUTED)/notebooks/%)
PACKAGE_FILES := pyproject.toml $(shell find minitune -type f -not -path '*/__pycache__/*' 2>/dev/null)
NBVAL_NOTEBOOKS := $(patsubst notebooks/%,$(EXECUTED)/notebooks/%,$(shell grep -l '"nbval-check-output"' $(NOTEBOOKS) /dev/null))
MATHJAX := node_modules/.package-lock.json

.PHONY: setup lint test experiment notebooks nbval book book-ci book-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,book]"
	touch $@

lint: setup
	$(BIN)/ruff check minitune tests benchmarks

test: setup
	$(BIN)/pytest -q --durations=15

# The README's main job: base → candidate pool → MI / random / oracle sets → LoRA → evaluation.
experiment: setup
	$(BIN)/minitune experiment --preset full --output-dir $(OUT)/experiment --results-dir book/results

# Execute the notebooks that changed (or whose package changed) since their executed copy.
notebooks: $(EXECUTED_NOTEBOOKS)

$(EXECUTED)/notebooks/%.ipynb: notebooks/%.ipynb $(PACKAGE_FILES) | $(VENV)/.installed
	$(BIN)/pytest -q tests/test_notebooks.py -k "$*"

# Re-run the executed copies of notebooks with cells tagged nbval-check-output and compare those
# cells' outputs with the first run (--nbval-lax: the other cells only have to run).
nbval: $(NBVAL_NOTEBOOKS) | $(VENV)/.installed
ifneq ($(strip $(NBVAL_NOTEBOOKS)),)
	$(BIN)/pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=600 $(NBVAL_NOTEBOOKS)
else
	@echo "nbval: no notebook has cells tagged nbval-check-output"
endif

$(MATHJAX): package.json package-lock.json
	npm ci --no-audit --no-fund

# HTML in _build/html from the executed notebooks, warnings as errors.
book: $(EXECUTED_NOTEBOOKS) $(MATHJAX) | $(VENV)/.installed
	rm -rf $(STAGE) && mkdir -p $(STAGE)/notebooks $(STAGE)/_mathjax
	cp -r _config.yml _toc.yml book $(STAGE)/
	cp $(EXECUTED_NOTEBOOKS) $(STAGE)/notebooks/
	cp -r node_modules/mathjax/es5 $(STAGE)/_mathjax/mathjax
	$(BIN)/jb build $(STAGE) --path-output . --all -W -n --keep-going
	@test ! -f $(EXECUTED)/timings.txt || { echo "notebook execution times:"; cat $(EXECUTED)/timings.txt; }

# CI, after `make test` has executed every notebook: nbval, then the book from those copies.
book-ci: nbval book

# Open every page of the built book in headless Chromium (needs the chromium package).
book-check: | $(VENV)/.installed
	$(PY) tests/browser_check.py _build/html --screenshots _build/browser-check

clean:
	rm -rf $(VENV) _build $(OUT) node_modules
