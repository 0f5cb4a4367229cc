# Two commands on a fresh machine:  make demo  |  make test   (each installs what it needs first)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install demo test lint tf-check deploy bench bench-dbt bench-stream schemas clean pubsub-up pubsub-down stream \
	airflow

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

lint: install tf-check
	$(BIN)/ruff check pipelines ml dashboards composer_dags tests benchmarks
	$(BIN)/sqlfluff lint dbt/models dbt/tests dbt/macros --config dbt/.sqlfluff --disable-progress-bar

# Terraform checked offline (providers cannot be downloaded here): formatting, and checkov's policies in
# an environment of its own (pulled into the project's venv it downgrades other packages).
CHECKOV ?= checkov==3.3.30
tf-check: install
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform; \
	else echo "terraform not installed: skipping terraform fmt"; fi
	$(BIN)/uv tool run --quiet --from '$(CHECKOV)' checkov -d terraform --framework terraform --compact --quiet \
		--skip-download

# The launch steps after `terraform apply` (README "Deploy to Google Cloud"); DEPLOY_ARGS=--dry-run to print them.
deploy: install
	$(BIN)/lakehouse deploy $(DEPLOY_ARGS)

bench: install
	$(BIN)/python benchmarks/backfill_throughput.py

bench-stream: install
	$(BIN)/python benchmarks/stream_freshness.py

# The local Pub/Sub emulator (topics and subscriptions included) and the stream job on it.
pubsub-up: install
	$(BIN)/lakehouse pubsub up

pubsub-down: install
	$(BIN)/lakehouse pubsub down

stream: install
	$(BIN)/lakehouse stream

# Airflow 3 standalone on localhost:8080 with composer_dags/ (database under $LAKEHOUSE_HOME/airflow); Ctrl-C stops it.
airflow: install
	$(BIN)/lakehouse airflow

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
