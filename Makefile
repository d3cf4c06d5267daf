# Targets make their own virtual environment on first use, with the versions the tests passed with
# (constraints.txt, written by `make lock`). torch is installed first: on a machine without an NVIDIA
# GPU the CPU build from PyTorch's CPU wheel index, or from the configured index where that one cannot
# be reached, so that pip never pulls a multi-GB CUDA build there; with a GPU, the configured index's.
VENV ?= .venv
# the Python the virtual environment is made from; constraints.txt states the oldest one its pins install on
PYTHON ?= python3
PY_FLOOR := $(shell sed -n 's/^\# python >= \([0-9.]*\).*/\1/p' constraints.txt)
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
OUT ?= outputs
TORCH := $(shell sed -n 's/^torch==//p' constraints.txt)
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# $(call install_torch,PYTHON,REQUIREMENT): torch without its dependencies (the next pip install brings them,
# pinned), the CPU build where `nvidia-smi` finds no GPU
install_torch = if nvidia-smi -L >/dev/null 2>&1; then $(1) -m pip install --quiet --no-deps "$(2)"; \
	else $(1) -m pip install --quiet --no-deps --retries 1 --timeout 30 --index-url $(TORCH_CPU_INDEX) "$(2)" \
	|| { echo "PyTorch's CPU wheel index cannot be reached: torch from the configured index"; \
	$(1) -m pip install --quiet --no-deps "$(2)"; }; fi
UPGRADE_VENV ?= _build/upgrade-check/venv
UPGRADE_TESTS ?= tests

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

.PHONY: setup lint test lock upgrade-check repository experiment notebooks nbval book book-ci book-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || { $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:3] < tuple(map(int, "$(PY_FLOOR)".split("."))))' \
	  || { echo "constraints.txt needs Python $(PY_FLOOR) or newer, and $(PYTHON) is $$($(PYTHON) -V 2>&1 | cut -d' ' -f2): run make with PYTHON=a-newer-python3"; exit 1; }; \
	  $(PYTHON) -m venv $(VENV); }
	$(call install_torch,$(PY),torch==$(TORCH))
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,book]"
	touch $@

lint: setup
	$(BIN)/ruff check minitune tests benchmarks

test: setup
	$(BIN)/pytest -q --durations=15

# constraints.txt from the environment in $(VENV), once its tests pass: every package the project needs, pinned.
lock:
	$(PY) tests/lockfile.py --write

# The newest versions of everything (torch included) in a scratch environment, $(UPGRADE_VENV): lists what
# moved against constraints.txt, then runs $(UPGRADE_TESTS) (e.g. UPGRADE_TESTS=tests/test_sd3.py) and reports
# what breaks. Where all pass, `make lock VENV=$(UPGRADE_VENV)` pins the new versions.
upgrade-check:
	rm -rf $(UPGRADE_VENV) && $(PYTHON) -m venv $(UPGRADE_VENV)
	$(call install_torch,$(UPGRADE_VENV)/bin/python,torch)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev,book]"
	@echo "newest versions against constraints.txt:" && $(UPGRADE_VENV)/bin/python tests/lockfile.py --diff
	MINITUNE_EXECUTED_DIR=$(dir $(UPGRADE_VENV))executed $(UPGRADE_VENV)/bin/pytest -q -rfE -p no:cacheprovider $(UPGRADE_TESTS) \
	  && echo "upgrade-check: the tests pass with the newest versions; make lock VENV=$(UPGRADE_VENV) pins them" \
	  || { echo "upgrade-check: the tests above fail with the newest versions (constraints.txt unchanged)"; exit 1; }

# A fork's address, e.g. make repository URL=https://github.com/you/minitune (BRANCH=main): _config.yml and what
# follows it (the notebooks' Colab badges and install cells, pyproject.toml's URLs, the README's link to the book).
repository:
	python3 tests/repository.py --set "$(URL)" $(if $(BRANCH),--branch "$(BRANCH)")

# The README's main job: base → candidate pool → MI / random / oracle sets → LoRA → evaluation; then the
# paper's recipe (the denoising loss on the top-k) on the same pool and base evaluation.
experiment: setup
	$(BIN)/minitune experiment --recipe full --output-dir $(OUT)/experiment --results-dir book/results
	$(BIN)/minitune experiment --recipe paper --pool-from $(OUT)/experiment --output-dir $(OUT)/experiment-paper \
	  --results-dir book/results --results-name experiment_paper_recipe

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
