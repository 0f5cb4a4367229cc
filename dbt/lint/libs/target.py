"""Lint-only stand-in for dbt's `target` (sqlfluff renders the SQL as for DuckDB)."""

type = "duckdb"
name = "local"
schema = "staging"
