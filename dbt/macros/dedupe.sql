{# Keep one row per `key`: the first by `order_by`. At-least-once delivery becomes exactly-once here. #}
{% macro dedupe(relation, key, order_by) -%}
    {{ return(adapter.dispatch('dedupe', 'lakehouse')(relation, key, order_by)) }}
{%- endmacro %}

{% macro default__dedupe(relation, key, order_by) -%}
    select *
    from {{ relation }}
    qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}

{# DuckDB: same SQL; kept explicit so each warehouse's version is visible. #}
{% macro duckdb__dedupe(relation, key, order_by) -%}
    {{ default__dedupe(relation, key, order_by) }}
{%- endmacro %}

{# BigQuery needs a WHERE, GROUP BY or HAVING beside QUALIFY. #}
{% macro bigquery__dedupe(relation, key, order_by) -%}
    select *
    from {{ relation }}
    where true
    qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}
