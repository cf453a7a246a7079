# kdbench: `make demo` runs the main job, `make test` the whole test suite, `make test-fast` the
# tests that train nothing (pytest -m "not slow": the loss, spec, store, analysis and report
# tests; well under a minute on 2 cores). All set up .venv first (tools/setup.sh: apt packages,
# torch, mmcv built from source, the OpenMMLab stack); the set-up is a no-op (< 1 s) once .venv
# matches requirements/pins.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers, one per core of the 2-core machines it is sized for
# (it is CPU-bound: a third worker made it slower), each taking the next test as it finishes one,
# in the order tests/conftest.py gives (the longest work first; the SLURM tests in turns on the
# local cluster). TEST_WORKERS=0 runs it in this process, one test at a time.
TEST_WORKERS ?= 2

.PHONY: setup test test-fast demo lint clean-results

setup:
	@bash tools/setup.sh $(VENV)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	@bash tools/demo.sh $(PY)

lint: setup
	$(PY) -m ruff check kdbench runners analysis reports tests

clean-results:
	rm -rf results
