# The README's two commands: `make demo` and `make test`.
# Each creates .venv and installs the package (editable) the first time; later
# runs only reinstall when setup.cfg or pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# No TF_CPP_MIN_LOG_LEVEL here: run.py hides TensorFlow's C++ start-up notices
# itself when the variable is unset (Python warnings and errors still show), and
# respects it when set: `TF_CPP_MIN_LOG_LEVEL=0 make demo` shows everything.

.PHONY: demo test test-all docs-check bench soak clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) run.py --flagfile=tf_configs/toy_gmm.cfg

# Test processes run side by side (pytest-xdist). Most of a test's time is spent
# tracing TensorFlow graphs, one Python thread, so two processes on two cores
# take about two thirds of the serial time (8:18 against 12:30). Each process
# holds its own TensorFlow and models; raise the count on a bigger machine:
# make test TEST_WORKERS=8.
TEST_WORKERS ?= 2
# One thread per TensorFlow op in each test process (and the runs it starts): with
# as many processes as cores, TensorFlow's default pool of one thread per core
# oversubscribes them, and its threads spin waiting for each other. Measured on 2
# cores, two heavy tests side by side: 111 s with one thread against 136 s with
# the default (docs/usage.md, "Tests"). Set it to 0 for TensorFlow's default.
TEST_OP_THREADS ?= 1
TEST_ENV := TF_NUM_INTRAOP_THREADS=$(TEST_OP_THREADS)

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m "not slow and not docs_check" -q -n $(TEST_WORKERS) --dist worksteal

test-all: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m "not docs_check" -q -n $(TEST_WORKERS) --dist worksteal

# Every shell command of README.md and docs/ as written, in order, in a scratch
# directory after `make demo`, with the work shrunk by NCSN_TF_EXTRA_FLAGS
# (tests/test_docs_commands.py; docs/usage.md). One process: the commands build
# on each other.
docs-check: $(STAMP)
	$(PY) -m pytest -m docs_check -q tests/test_docs_commands.py

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Long runs (toy 20k steps, shapes 2k steps): RSS and step time over the run.
soak: $(STAMP)
	$(PY) benchmarks/soak.py

clean:
	rm -rf runs .pytest_cache
