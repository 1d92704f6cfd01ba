# dreamlink: every workflow is a make target. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SEED ?= 0
ONBOARD := dreamlink/runtime dreamlink/firmware_bridge dreamlink/bundle.py dreamlink/spec.py

.PHONY: venv demo test lint unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/dreamlink demo cartpole --seed $(SEED)

lint: venv
	$(BIN)/ruff check dreamlink tests
	$(BIN)/mypy $(ONBOARD)

test: lint
	$(BIN)/pytest -q

# The fast layer: no SITL processes, no training.
unit: venv
	$(BIN)/pytest -q -m "not sitl and not slow"

clean:
	rm -rf $(VENV) build *.egg-info runs
