# Two commands for a newcomer: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast test-matrix demo install bench lab clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: pip then keeps it rather than pulling the newest multi-GB build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[lab,reproduce,test]"
	# Triton, for the test that runs our GPU kernels in Triton's CPU interpreter; a CUDA torch
	# brings its own (kept). Optional: without it that one test skips and says why.
	$(PY) -c "import triton" 2>/dev/null || $(PY) -m pip install -q triton==3.9.0 \
		|| echo "make: triton could not be installed; the Triton interpreter test will skip"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Each learning notebook runs once: in JupyterLab + headless Chromium (tests/test_browser.py, which
# fails on any cell error), or with nbval where that test cannot run (no Chromium or playwright).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -rs tests
	@if why=$$($(PY) tests/browser_helpers.py); then \
		echo "make: the browser test above ran every learning notebook; not running them again with nbval"; \
	else \
		echo "make: $$why: running the learning notebooks with nbval instead"; \
		$(PY) -m pytest -q -rs --nbval notebooks; \
	fi

# The day-to-day loop: everything but the tests marked slow (browser, papermill, subprocess runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -rs -m "not slow" tests

# The portability matrix (tools/test-matrix): the fast suite and the notebooks under other CPU
# settings, and in a second venv with the newest torch pyproject.toml admits (pip's own choice).
NEWEST := .venv-newest
$(NEWEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install -q --upgrade pip
	$(NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[lab,reproduce,test]"
	$(NEWEST)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

test-matrix: $(STAMP) $(NEWEST)/.installed
	tools/test-matrix

demo: $(STAMP)
	$(PY) -m tspike_lab.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_neuron.py
	$(PY) benchmarks/bench_train_step.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(VENV) $(NEWEST) .matrix *.egg-info .pytest_cache
