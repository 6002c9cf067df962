# One task runner; CI calls `make test`. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCENARIO ?= scenarios/default.toml
RUNS ?= runs

.PHONY: help install sweep test lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# pip byte-compiles what it installs one file at a time (about a minute here: transformers alone has
# thousands of modules); compileall does the same on every core. Compiled here, not lazily: where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) nothing would ever be cached, and every
# process would compile what it imports again. Left out (-x): torch's one test file in Python 3.12
# syntax, which nothing here imports (compileall would report it), and transformers' model families
# but the ones the renderers backend loads (auto, encoder_decoder, qwen*): 2,600 files nothing
# imports, 6 s of the install here.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e '.[dev,renderers]'
	$(PY) -m compileall -q -j 0 -x 'py312_intrinsics|transformers/models/(?!auto/|qwen|encoder_decoder/)' \
		$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
	touch $(STAMP)

install: $(STAMP) ## create .venv and install mmbench with its dev and renderers extras

sweep: $(STAMP) ## run scenarios/default.toml with the embedded engine, print the table, write results
	$(VENV)/bin/mmbench sweep $(SCENARIO) --out $(RUNS)/$(notdir $(basename $(SCENARIO)))-$$(date -u +%Y%m%dT%H%M%SZ)

test: $(STAMP) ## run the whole test suite (in parallel: one pytest worker per core)
	$(PY) -m pytest -q -n auto --dist worksteal

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy mmbench

.PHONY: docs
docs: $(STAMP) ## write docs/cli.md, the CLI reference, from the Typer app (a test fails while it is stale)
	$(PY) -m mmbench.cli.reference docs/cli.md

clean: ## remove the venv and run outputs
	rm -rf $(VENV) $(RUNS)
