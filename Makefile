# kdbench: `make demo` runs the main job, `make test` the whole test suite, `make test-fast` the
# tests that train nothing (pytest -m "not slow": the loss, spec, store, analysis and report
# tests; well under a minute on 2 cores). All set up .venv first (tools/setup.sh: apt packages,
# torch, mmcv built from source, the OpenMMLab stack); the set-up is a no-op (< 1 s) once .venv
# matches requirements/pins.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers, one per core of the 2-core machines it is sized for:
# most slow tests wait on a subprocess's imports on one core; the SLURM tests share one worker
# (tests/conftest.py). TEST_WORKERS=0 runs it in this process, one test at a time.
TEST_WORKERS ?= 2

.PHONY: setup test test-fast demo lint clean-results

setup:
	@bash tools/setup.sh $(VENV)

# The tests on two SLURM nodes (tests/test_slurm_two_nodes.py) switch the local cluster to two nodes
# and back: they run after the rest, in their own session, so no other cluster test meets the switch.
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not two_nodes" $(PYTEST_ARGS)
	@if [ -z "$(PYTEST_ARGS)" ]; then $(PY) -m pytest tests/test_slurm_two_nodes.py; fi

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	@bash tools/demo.sh $(PY)

lint: setup
	$(PY) -m ruff check kdbench runners analysis reports tests

clean-results:
	rm -rf results
