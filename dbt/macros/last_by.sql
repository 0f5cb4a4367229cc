{# Aggregate: the `value` of the row with the greatest `order_by` in the group (rows whose `order_by` is
   null are not considered). #}
{% macro last_by(value, order_by) -%}
    {{ return(adapter.dispatch('last_by', 'lakehouse')(value, order_by)) }}
{%- endmacro %}

{% macro duckdb__last_by(value, order_by) -%}
    arg_max({{ value }}, {{ order_by }})
{%- endmacro %}

{# MAX_BY = ANY_VALUE(value HAVING MAX order_by). (ARRAY_AGG(... ORDER BY ... LIMIT 1)[SAFE_OFFSET(0)] works
   on BigQuery too, but the bqemulator's SQL translation breaks on it.) #}
{% macro bigquery__last_by(value, order_by) -%}
    max_by({{ value }}, {{ order_by }})
{%- endmacro %}
