"""Packaging for the demand-forecasting lakehouse (`demand-lakehouse`).

One distribution, two packages (`pipelines`, `ml`) and extras so that each place installs only what
it runs: Dataflow workers take `beam`, a laptop takes `local`, CI and developers take `dev`.

    make install                      # .venv with the pinned dev set (see requirements/constraints.txt)
    pip install -e '.[beam]'          # what a Dataflow worker needs
"""

from setuptools import find_packages, setup

BEAM = ["apache-beam[gcp]==2.77.0"]
LOCAL = ["duckdb>=1.1"]
# ujson: stanio (cmdstanpy) writes the data of every Prophet fit with it when present, else with the
# stdlib json in pure-Python streaming mode, which took ~30% of a fit here
ML = ["prophet>=1.1,<1.6", "statsforecast>=1.7", "matplotlib>=3.8", "ujson>=5.5"]
DBT = ["dbt-core>=1.11,<1.12", "dbt-duckdb>=1.9,<1.12", "dbt-bigquery>=1.9,<1.12"]
AIRFLOW = [
    "apache-airflow==3.3.2",
    "apache-airflow-providers-google",
    "apache-airflow-providers-apache-beam",
    "astronomer-cosmos>=1.10",
]
DASHBOARD = ["streamlit>=1.40", "plotly>=5.20"]
# Emulators and offline checkers the tests drive: BigQuery (bqemulator), Terraform (python-hcl2), the
# browser (selenium with Debian's chromium-driver), dbt SQL (sqlfluff).
TEST = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "ruff>=0.6",
    "sqlfluff>=3.2",
    "sqlfluff-templater-dbt>=3.2",
    "bqemulator[all]>=1.4",
    "python-hcl2>=7",
    "selenium>=4.20",
]

setup(
    name="demand-lakehouse",
    version="0.1.0",
    description="Real-time demand-forecasting lakehouse: Beam, dbt, Prophet, Airflow, on GCP or one machine",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["pipelines", "pipelines.*", "ml", "ml.*"]),
    include_package_data=True,
    install_requires=[
        "pydantic>=2.6",
        "pydantic-settings>=2.2",
        "pyarrow>=14",
        "orjson>=3.9",
        "numpy>=1.24",
        "typer>=0.12",
        "rich>=13",
        "msgspec>=0.18",
        "holidays>=0.40",
    ],
    extras_require={
        "beam": BEAM,
        "local": LOCAL,
        "ml": ML,
        "dbt": DBT,
        "airflow": AIRFLOW,
        "dashboard": DASHBOARD,
        # Development and CI run every part of the platform on one machine.
        "dev": BEAM + LOCAL + ML + DBT + AIRFLOW + DASHBOARD + TEST,
        "all": BEAM + LOCAL + ML + DBT + AIRFLOW + DASHBOARD + TEST,
    },
    entry_points={"console_scripts": ["lakehouse=pipelines.cli:app"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
    ],
)
