# ois_lightning: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Torch for this environment (local wheels); pyproject keeps a range.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install setup lint test browser demo paper-mini bench gpu-check clean

# pip --no-compile, then compileall on every core (pip byte-compiles one file at a time, about twice as long on 2
# cores); torch's files are compiled while pip installs the rest (it leaves torch as it is). A file for a newer
# Python (torch ships one for 3.12) does not compile and stays source, as pip leaves it.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(TORCH_PIN)
	$(PY) -m compileall -q -j 0 $(VENV)/lib/python3*/site-packages/torch >/dev/null & \
	  $(PY) -m pip install --quiet --no-compile -e '.[dev,hf,export]' $(TORCH_PIN); status=$$?; wait; exit $$status
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# ruff (pyproject.toml [tool.ruff]); the import contracts are tests/test_layering.py.
lint: $(STAMP)
	$(VENV)/bin/ruff check

# Two pytest-xdist workers of one thread each (tests/conftest.py): most tests wait on a single-threaded `ois`
# subprocess (imports, one training), so two at a time use both cores; TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 2
test: setup
	@$(MAKE) --no-print-directory lint
	WANDB_MODE=offline $(PY) -m pytest -q --durations=20 -n $(TEST_WORKERS) tests

# the install and the browser side by side (pip and apt wait on the disk and the network much of the time)
setup:
	@$(MAKE) --no-print-directory -j2 install browser

# Debian's chromium + chromedriver for the `ois app` browser test (as root; otherwise that test skips).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "make browser: chromium/chromedriver missing and not root: the ois app browser test will skip"; fi

demo: $(STAMP)
	WANDB_MODE=offline $(PY) -m ois_lightning demo

# Tables 4-11 in miniature, the controls and the scorecard (docs/mini_paper.md), into paper_mini_out; takes a
# finished `make demo`'s pretraining. PAPER_MINI_FULL=1: more seeds and held-out objects (CIs for a verdict on every
# row), into paper_mini_full_out, building on a finished `make paper-mini`; both resumable.
paper-mini: $(STAMP)
	WANDB_MODE=offline PAPER_MINI_FULL=$(PAPER_MINI_FULL) $(PY) -m ois_lightning demo --tables all

bench: $(STAMP)
	$(PY) -m ois_lightning bench

# The CUDA-only tests and the paper-size bench in one report, gpu_check.json (<= 8 min; skips without CUDA).
gpu-check: $(STAMP)
	WANDB_MODE=offline $(PY) -m ois_lightning.tools.gpu_check

# What `make demo` and `make test` made, nothing else: your trainings (runs/) and paper-mini's folders (hours of
# runs) stay; remove those by hand.
clean:
	rm -rf $(VENV) demo_out .pytest_cache
