{# The configuration of the daily incremental tables (the facts and the daily intermediates): keyed by
   `date_column` and `key_columns`, rebuilt by date (delete+insert on DuckDB, merge on BigQuery), partitioned
   by `date_column` and clustered by store and product on BigQuery, new columns added. Call it where a model
   would call config(). #}
{% macro daily_incremental(date_column, key_columns) -%}
    {%- do config(
        materialized='incremental',
        unique_key=[date_column] + key_columns,
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        partition_by=({'field': date_column, 'data_type': 'date', 'granularity': 'day'}
                      if target.type == 'bigquery' else none),
        cluster_by=['store_id', 'product_id'],
        on_schema_change='append_new_columns'
    ) -%}
{%- endmacro %}

{# First date an incremental model rebuilds: its newest `date_col` minus the lookback (var lookback_days),
   as a date literal, so both warehouses prune partitions (BigQuery prunes only on constant filters).
   Returns none on a full build. #}
{% macro incremental_cutoff(date_col) -%}
    {%- if not is_incremental() or not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set newest = run_query('select max(' ~ date_col ~ ') from ' ~ this).columns[0].values()[0] -%}
    {%- if newest is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set lookback = var('lookback_days') | int -%}
    {{ return((newest - modules.datetime.timedelta(days=lookback)).isoformat()) }}
{%- endmacro %}

{# `where`-clause filter: `date_col` on or after the cutoff; true on a full build. #}
{% macro since_cutoff(date_col, cutoff) -%}
    {%- if cutoff is none -%} true {%- else -%} {{ date_col }} >= date '{{ cutoff }}' {%- endif -%}
{%- endmacro %}

{# The day before the date literal `cutoff` (an ISO date string), as a date literal. #}
{% macro day_before(cutoff) -%}
    date '{{ (modules.datetime.date.fromisoformat(cutoff) - modules.datetime.timedelta(days=1)).isoformat() }}'
{%- endmacro %}
