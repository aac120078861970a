# Two commands for a newcomer: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo install bench lab clean

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

test: $(STAMP)
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbval notebooks

demo: $(STAMP)
	$(PY) -m tspike_lab.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_neuron.py
	$(PY) benchmarks/bench_train_step.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
