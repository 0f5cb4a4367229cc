{# Lint-only stand-ins for the project's macros (dbt/macros): same signatures, DuckDB-flavoured SQL. #}
{% macro dedupe(relation, key, order_by, where='true') -%}
    select * from {{ relation }} where {{ where }}
    qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}
{% macro keys_present(columns) -%}{{ columns | join(' is not null and ') }} is not null{%- endmacro %}
{% macro event_keys_present() -%}event_id is not null and event_date is not null{%- endmacro %}
{% macro staged_events(relation) -%}
    select * from {{ relation }} where event_id is not null
    qualify row_number() over (partition by event_date, event_id order by event_ts) = 1
{%- endmacro %}
{% macro days_between(bounds, start_col, end_col) -%}
    select cast(unnest(generate_series({{ start_col }}, {{ end_col }}, interval 1 day)) as date) as date_day
    from {{ bounds }}
{%- endmacro %}
{% macro last_by(value, order_by) -%}arg_max({{ value }}, {{ order_by }}){%- endmacro %}
{% macro iso_day_of_week(date_expr) -%}isodow({{ date_expr }}){%- endmacro %}
{% macro iso_week(date_expr) -%}weekofyear({{ date_expr }}){%- endmacro %}
{% macro safe_divide(numerator, denominator) -%}({{ numerator }}) / nullif({{ denominator }}, 0){%- endmacro %}
{% macro incremental_cutoff(date_col) -%}2024-01-01{%- endmacro %}
{% macro since_cutoff(date_col, cutoff) -%}{{ date_col }} >= date '2024-01-01'{%- endmacro %}
{% macro day_before(cutoff) -%}date '2023-12-31'{%- endmacro %}
{% macro series_days(series, date_alias, cutoff=none) -%}
    select days.date_day as {{ date_alias }}, series.store_id, series.product_id
    from {{ series }} as series
    inner join (select cast(unnest(generate_series(date '2024-01-01', date '2024-01-02', interval 1 day)) as date)
        as date_day) as days
        on series.first_date <= days.date_day and series.store_last_date >= days.date_day
{%- endmacro %}
{% macro storage_order(columns) -%}order by {{ columns }}{%- endmacro %}
{% macro daily_incremental(date_column, key_columns) -%}{%- endmacro %}
{% macro units_ordered(quantity) -%}greatest({{ quantity }}, 0){%- endmacro %}
{% macro units_returned(quantity) -%}greatest(-{{ quantity }}, 0){%- endmacro %}
