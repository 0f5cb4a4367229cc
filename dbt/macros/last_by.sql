{# Aggregate: the `value` of the row with the greatest `order_by` in the group. #}
{% macro last_by(value, order_by) -%}
    {{ return(adapter.dispatch('last_by', 'lakehouse')(value, order_by)) }}
{%- endmacro %}

{% macro duckdb__last_by(value, order_by) -%}
    arg_max({{ value }}, {{ order_by }})
{%- endmacro %}

{% macro bigquery__last_by(value, order_by) -%}
    array_agg({{ value }} ignore nulls order by {{ order_by }} desc limit 1)[safe_offset(0)]
{%- endmacro %}
