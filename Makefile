# Two entry points for a fresh clone: `make demo` trains the main recipe, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/accel-trainer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(BIN)/accel-trainer
	$(BIN)/accelerate launch -m accel_trainer recipes/det.toml

# Two workers, one test file each at a time (files that launch processes use ports of their own).
test: $(BIN)/accel-trainer
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(BIN)/accel-trainer
	$(BIN)/ruff check accel_trainer tests benchmarks scripts
	$(BIN)/ruff format --check accel_trainer tests benchmarks scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) work_dirs
