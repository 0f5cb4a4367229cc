{# Each column of `values` (a mapping: column -> its accepted values) holds only those values (nulls pass, as
   with dbt's accepted_values), in one scan of the model where an accepted_values test per column would scan it
   once per column (and cost dbt a node each). Returns one row per column and unexpected value, with its
   count; the test's failures are the rows with such values, counted per column. #}
{% test accepted_values_columns(model, values) %}
    {{ config(fail_calc='coalesce(sum(n_records), 0)') }}
    {%- set checks = [] -%}
    {%- for column, accepted in values.items() -%}
    {%- set quoted = [] -%}
    {%- for value in accepted -%}{%- do quoted.append(dbt.string_literal(value)) -%}{%- endfor -%}
    {%- do checks.append((column, column ~ ' not in (' ~ quoted | join(', ') ~ ')')) -%}
    {%- endfor %}

with

unexpected as (

    -- the rows with an unexpected value in any column (usually none), grouped by those values
    select
        {% for column, check in checks -%}
            case when {{ check }} then cast({{ column }} as {{ dbt.type_string() }}) end as value_{{ loop.index }},
        {% endfor -%}
        count(*) as n_records
    from {{ model }}
    where
        {% for column, check in checks -%}
            {{ check }}{% if not loop.last %} or {% endif %}
        {% endfor %}
    group by {% for _ in checks %}{{ loop.index }}{% if not loop.last %}, {% endif %}{% endfor %}

),

checked_columns as (

    {% for column, check in checks -%}
        select '{{ column }}' as column_name
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

per_value as (

    select
        checked_columns.column_name,
        case checked_columns.column_name
            {% for column, check in checks -%}
                when '{{ column }}' then unexpected.value_{{ loop.index }}
            {% endfor -%}
        end as value_field,
        unexpected.n_records
    from unexpected
    cross join checked_columns

)

select
    column_name,
    value_field,
    sum(n_records) as n_records
from per_value
where value_field is not null
group by column_name, value_field

{% endtest %}
