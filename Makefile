# Two commands a newcomer runs: `make eval` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: eval test gate lint bench venv clean

venv: $(STAMP)

# The authors' StreamDiffusion, run by tests/test_reference_streamdiffusion.py as an oracle (a test dependency, never
# imported by the package). --no-deps: it pins diffusers==0.24.0 and would downgrade ours; it runs under ours.
REFERENCE_TEST_DEPS := streamdiffusion==0.1.1

# torch/torchvision are pinned first: a bare `torch` requirement can pull a different (multi-GB) build.
$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -q -e ".[dev,cluster]"
	$(PYTHON) -m pip install -q --no-deps $(REFERENCE_TEST_DEPS)
	touch $(STAMP)

eval: $(STAMP)
	$(PYTHON) run_eval.py $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest -q $(ARGS)

gate: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) run_eval.py experiment=ci_latency $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	@echo "Benchmarks (each writes JSON + markdown into benchmarks/results/):"; ls benchmarks/*.py

clean:
	rm -rf $(VENV) results/*/ outputs multirun
