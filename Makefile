# The README's two commands: `make demo` and `make test`.
# Each creates .venv and installs the package (editable) the first time; later
# runs only reinstall when setup.cfg or pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quiet TensorFlow's C++ start-up chatter; warnings and errors still show.
export TF_CPP_MIN_LOG_LEVEL ?= 1

.PHONY: demo test test-all bench soak clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) run.py --flagfile=tf_configs/toy_gmm.cfg

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Long runs (toy 20k steps, shapes 2k steps): RSS and step time over the run.
soak: $(STAMP)
	$(PY) benchmarks/soak.py

clean:
	rm -rf runs .pytest_cache
