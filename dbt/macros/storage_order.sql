{# The order a large table's rows are stored in: `order by <columns>` on DuckDB, nothing on BigQuery (whose
   partitioning and clustering configs lay the rows out). Ends the model's final select.

   On DuckDB a table keeps the order rows were inserted in, and each row group's min/max lets a date filter
   skip the rest. Stored by date, an incremental build's delete + insert of the last days touches the last
   row groups only, and so does the checkpoint that writes them (measured: 10x less than rows in the order
   parallel aggregation left them); tests and readers that filter recent days read little. #}
{% macro storage_order(columns) -%}
    {{ return(adapter.dispatch('storage_order', 'lakehouse')(columns)) }}
{%- endmacro %}

{% macro default__storage_order(columns) -%}
{%- endmacro %}

{% macro duckdb__storage_order(columns) -%}
    order by {{ columns }}
{%- endmacro %}
