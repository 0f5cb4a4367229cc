{# Keep one row per `key` (one or more columns): the first by `order_by`, of the rows where `where` holds.
   At-least-once delivery becomes exactly-once here. A filter on a key column passes the window and reaches
   the scan (the staging models key on event_date, event_id: incremental readers prune partitions). The same SQL runs on DuckDB and BigQuery (which needs a WHERE, GROUP BY or
   HAVING beside QUALIFY, hence the where clause is always there); dispatched so an adapter can differ. #}
{% macro dedupe(relation, key, order_by, where='true') -%}
    {{ return(adapter.dispatch('dedupe', 'lakehouse')(relation, key, order_by, where)) }}
{%- endmacro %}

{% macro default__dedupe(relation, key, order_by, where) -%}
    select *
    from {{ relation }}
    where {{ where }}
    qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}

{# `where` condition: none of `columns` is null. #}
{% macro keys_present(columns) -%}
    {%- for column in columns %}{{ column }} is not null{% if not loop.last %} and {% endif %}{% endfor -%}
{%- endmacro %}
