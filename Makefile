# Two commands on a fresh machine:  make demo  |  make test   (each installs what it needs first)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install demo test lint bench bench-dbt schemas clean

install: $(STAMP)

# uv installs the pinned set (requirements/constraints.txt, compiled with uv from setup.py) in seconds;
# --compile-bytecode matters here: this image sets PYTHONDONTWRITEBYTECODE, and Beam alone takes ~4 s
# to compile on every start without it.
$(STAMP): setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.9,<1'
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -c requirements/constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(BIN)/lakehouse demo

test: install lint
	$(BIN)/python -m pytest -n 2 --durations=10

lint: install
	$(BIN)/ruff check pipelines ml tests benchmarks
	$(BIN)/sqlfluff lint dbt/models dbt/tests dbt/macros --config dbt/.sqlfluff --disable-progress-bar

bench: install
	$(BIN)/python benchmarks/backfill_throughput.py

# Full and incremental dbt build on a year of simulated events (20 stores x 200 products).
bench-dbt: install
	$(BIN)/python benchmarks/dbt_build.py

# Regenerate the BigQuery schemas, the dbt sources and the holiday seed derived from the contract
# (tests check they are current).
schemas: install
	$(BIN)/lakehouse schemas --out schemas/bigquery

# Refresh the lock after changing setup.py's ranges.
lock: install
	$(BIN)/uv pip compile setup.py --extra all --python-version 3.11 -o requirements/constraints.txt

clean:
	rm -rf .lakehouse data .pytest_cache benchmarks/.data
