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

# Two workers for the single-process tests, then the tests that launch process groups one by one.
test: $(BIN)/accel-trainer
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not multiprocess"
	$(BIN)/python -m pytest -q -m multiprocess

lint: $(BIN)/accel-trainer
	$(BIN)/ruff check accel_trainer tests benchmarks scripts
	$(BIN)/ruff format --check accel_trainer tests benchmarks scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) work_dirs
