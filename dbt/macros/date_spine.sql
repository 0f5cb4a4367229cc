{# One row per day (column date_day) from `start_col` to `end_col` of the one-row relation `bounds`. #}
{% macro days_between(bounds, start_col, end_col) -%}
    {{ return(adapter.dispatch('days_between', 'lakehouse')(bounds, start_col, end_col)) }}
{%- endmacro %}

{% macro duckdb__days_between(bounds, start_col, end_col) -%}
    select cast(unnest(generate_series(
        cast({{ start_col }} as timestamp), cast({{ end_col }} as timestamp), interval 1 day
    )) as date) as date_day
    from {{ bounds }}
    where {{ start_col }} is not null
{%- endmacro %}

{% macro bigquery__days_between(bounds, start_col, end_col) -%}
    select date_day
    from {{ bounds }}
    cross join unnest(generate_date_array({{ start_col }}, {{ end_col }})) as date_day
{%- endmacro %}
