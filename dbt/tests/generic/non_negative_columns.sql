{# No value of `columns` is below zero (nulls pass), in one scan (macros/failing_per_column.sql). Returns one
   row per column with negative values, with their count; the test's failures are those values in all. #}
{% test non_negative_columns(model, columns) %}
    {{ config(fail_calc='coalesce(sum(failing_rows), 0)') }}
    {{ failing_per_column(model, columns, '{column} < 0') }}
{% endtest %}
