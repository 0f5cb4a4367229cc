{# None of `columns` holds a null, in one scan (macros/failing_per_column.sql). Returns one row per column that
   has nulls, with their count; the test's failures are the null values in all, so its message reads like
   not_null's. #}
{% test not_null_columns(model, columns) %}
    {{ config(fail_calc='coalesce(sum(failing_rows), 0)') }}
    {{ failing_per_column(model, columns, '{column} is null') }}
{% endtest %}
