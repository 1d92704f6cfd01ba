# dreamlink: every workflow is a make target. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SEED ?= 0
ONBOARD := dreamlink/runtime dreamlink/firmware_bridge dreamlink/deploy dreamlink/bundle.py dreamlink/spec.py

.PHONY: venv demo test lint unit bench image-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/dreamlink demo cartpole --seed $(SEED)

lint: venv
	$(BIN)/ruff check dreamlink tests bench
	$(BIN)/mypy $(ONBOARD)

test: lint
	$(BIN)/pytest -q

# The fast layer: no SITL processes, no training.
unit: venv
	$(BIN)/pytest -q -m "not sitl and not slow"

BENCH_OUT ?= runs/bench
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,bench]"
	touch $@

# The planner benchmark (a command, not a test): 12-20 min on 2 cores; BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/.bench-installed
	$(PY) bench/planner_bench.py --out $(BENCH_OUT) $(BENCH_ARGS)

# A real Debian root filesystem (debootstrap, cached) with the overlay and the wheel: the runtime
# starts from the unit's own ExecStart inside it. Needs root; too slow for CI.
image-test: venv
	scripts/image-test.sh

clean:
	rm -rf $(VENV) build *.egg-info runs
