{# The test window: on an incremental build, the data tests of an event table or model check the days the
   build rebuilt, not all history again. A model or source names its event-date column in
   `meta: {test_window: <column>}`; every data test has `where: "__test_window__"` (dbt_project.yml), which
   get_where_subquery below turns into `<column> >= date '<window start>' or <column> is null` (a literal:
   DuckDB prunes hive partitions, BigQuery prunes partitions).

   The window starts at the first day the incremental models rebuild: the newest demand_date of
   fact_daily_demand before the command ran, minus var('lookback_days'). It is fixed when a dbt command
   starts (on-run-start: record_test_window, before any model runs) in the table dbt_test_window of the
   target schema (the staging schema/dataset). A full build (no facts yet, or --full-refresh) has no
   window: its tests check everything.
   Singular tests (the reconciliation with silver, the complete grid) always check all history; they are
   what finds events later than the lookback. #}

{# The on-run-start hook's SQL: records the window (a table with its first day), or drops the table when the
   build has none. (Returned, not run here: dbt commits a hook's own SQL; dbt's relation cache is told.) #}
{% macro record_test_window() -%}
    {%- if not execute -%}{{ return('select 1') }}{%- endif -%}
    {%- set fact = adapter.get_relation(database=target.database,
                                        schema=env_var('LAKEHOUSE_GOLD_DATASET', 'gold'),
                                        identifier='fact_daily_demand') -%}
    {%- set newest = none -%}
    {%- if fact is not none and not flags.FULL_REFRESH -%}
        {%- set newest = run_query('select max(demand_date) from ' ~ fact).columns[0].values()[0] -%}
    {%- endif -%}
    {%- set recorded = adapter.get_relation(database=target.database, schema=target.schema,
                                            identifier='dbt_test_window') -%}
    {%- if newest is not none -%}
        {%- set start = newest - modules.datetime.timedelta(days=var('lookback_days') | int) -%}
        {%- do adapter.cache_added(test_window_relation()) -%}
        {{ return("create or replace table " ~ test_window_relation() ~ " as select date '"
                  ~ start.isoformat() ~ "' as window_start") }}
    {%- elif recorded is not none -%}
        {%- do adapter.cache_dropped(recorded) -%}
        {{ return('drop table ' ~ recorded) }}
    {%- endif -%}
    {{ return('select 1') }}
{%- endmacro %}

{% macro test_window_relation() -%}
    {{ return(api.Relation.create(database=target.database, schema=target.schema,
                                  identifier='dbt_test_window', type='table')) }}
{%- endmacro %}

{# dbt's wrapper of the tested relation for the `where` config, with __test_window__ resolved. #}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where == '__test_window__' -%}
        {%- set where = test_window_filter(relation) -%}
    {%- endif -%}
    {%- if where -%}
        {{ return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') }}
    {%- endif -%}
    {{ return(relation) }}
{%- endmacro %}

{# The filter of the current test on `relation`: '' when what it tests has no meta.test_window or the build has
   no window. A source test names its source among the test's sources (a relationships test between two
   sources has both: the tested one is the relation passed here). #}
{% macro test_window_filter(relation) -%}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    {%- set found = namespace(node=graph.nodes.get(model.attached_node) if model.attached_node else none) -%}
    {%- for source_name, table_name in model.sources if found.node is none -%}
        {%- set source = graph.sources.get('source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name) -%}
        {%- if source is not none and source.relation_name == relation | string -%}
            {%- set found.node = source -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set tested = found.node -%}
    {%- set column = tested.config.meta.get('test_window') if tested is not none else none -%}
    {%- if not column -%}{{ return('') }}{%- endif -%}
    {%- set window = adapter.get_relation(database=target.database, schema=target.schema,
                                          identifier='dbt_test_window') -%}
    {%- if window is none -%}{{ return('') }}{%- endif -%}
    {%- set start = run_query('select window_start from ' ~ window).columns[0].values()[0] -%}
    {%- if start is none -%}{{ return('') }}{%- endif -%}
    {{ return("(" ~ column ~ " >= date '" ~ start.isoformat() ~ "' or " ~ column ~ " is null)") }}
{%- endmacro %}
