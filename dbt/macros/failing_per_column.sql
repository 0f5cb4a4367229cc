{# The body of a generic test over several columns in one scan of `model`, where a test per column would scan
   it once per column (and cost dbt a node each): one row per column of `columns` with rows where `condition`
   holds (`{column}` in it stands for the column), with their count in failing_rows. Used by the generic tests
   not_null_columns and non_negative_columns, which count failures as sum(failing_rows). #}
{% macro failing_per_column(model, columns, condition) %}

with

counted as (

    select
        {% for column in columns -%}
            sum(case when {{ condition | replace('{column}', column) }} then 1 else 0 end) as failing_{{ loop.index }}
            {%- if not loop.last %},{% endif %}
        {% endfor %}
    from {{ model }}

),

by_column as (

    {% for column in columns -%}
        select
            '{{ column }}' as column_name,
            failing_{{ loop.index }} as failing_rows
        from counted
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select * from by_column
where failing_rows > 0

{% endmacro %}
