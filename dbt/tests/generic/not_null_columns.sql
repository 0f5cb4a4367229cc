{# None of `columns` holds a null: one scan of the model for all of them, where a `not_null` test per column
   would scan it once per column (and cost dbt a node each). Returns one row per column that has nulls, with
   their count; the test's failures are the null values in all (fail_calc), so its message reads like
   not_null's. #}
{% test not_null_columns(model, columns) %}
{{ config(fail_calc='coalesce(sum(null_rows), 0)') }}

with

nulls as (

    select
        {% for column in columns -%}
            sum(case when {{ column }} is null then 1 else 0 end) as null_{{ loop.index }}
            {%- if not loop.last %},{% endif %}
        {% endfor %}
    from {{ model }}

),

by_column as (

    {% for column in columns -%}
        select
            '{{ column }}' as column_name,
            null_{{ loop.index }} as null_rows
        from nulls
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select * from by_column
where null_rows > 0

{% endtest %}
