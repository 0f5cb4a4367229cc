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
