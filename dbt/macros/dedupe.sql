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

{# The staged copy of an event table (`relation`: silver.order_events or silver.inventory_events, or rows of
   one): one row per event_date and event_id, the first in (event_ts, source_uri, source_line) order - the
   lakehouse's own rule - of the rows with every key present (the others cannot be deduplicated or counted;
   the source's not_null tests name them). #}
{% macro staged_events(relation) -%}
    {{ dedupe(relation, 'event_date, event_id', 'event_ts, source_uri, source_line', where=event_keys_present()) }}
{%- endmacro %}

{# `where` condition: the keys of an event row are all there. #}
{% macro event_keys_present() -%}
    {{ keys_present(['event_id', 'event_ts', 'event_date', 'store_id', 'product_id']) }}
{%- endmacro %}
