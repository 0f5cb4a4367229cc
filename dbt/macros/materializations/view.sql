{# Views on DuckDB in one statement: `create or replace view`, atomic in a transaction, as dbt's BigQuery and
   Snowflake materializations do. dbt's default materialization creates a temporary view, renames the old
   one away, renames the new one in and drops the old (four statements and their cache bookkeeping for each
   of the project's 16 views on every build). An existing table of that name is dropped first, as there. #}
{% materialization view, adapter='duckdb' -%}
    {%- set existing = load_cached_relation(this) -%}
    {%- set target_relation = this.incorporate(type='view') -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {%- if existing is not none and not existing.is_view -%}
        {{ adapter.drop_relation(existing) }}
    {%- endif -%}

    {% call statement('main') -%}
        create or replace view {{ target_relation }} as (
            {{ sql }}
        );
    {%- endcall %}

    {% do persist_docs(target_relation, model) %}
    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {{ adapter.commit() }}
    {{ run_hooks(post_hooks, inside_transaction=False) }}

    {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}
