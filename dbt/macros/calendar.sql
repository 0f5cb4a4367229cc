{# ISO day of week of a date: 1 = Monday ... 7 = Sunday. #}
{% macro iso_day_of_week(date_expr) -%}
    {{ return(adapter.dispatch('iso_day_of_week', 'lakehouse')(date_expr)) }}
{%- endmacro %}

{% macro duckdb__iso_day_of_week(date_expr) -%}
    isodow({{ date_expr }})
{%- endmacro %}

{% macro bigquery__iso_day_of_week(date_expr) -%}
    mod(extract(dayofweek from {{ date_expr }}) + 5, 7) + 1
{%- endmacro %}

{# ISO week number (weeks start on Monday; week 1 holds the year's first Thursday). #}
{% macro iso_week(date_expr) -%}
    {{ return(adapter.dispatch('iso_week', 'lakehouse')(date_expr)) }}
{%- endmacro %}

{% macro duckdb__iso_week(date_expr) -%}
    weekofyear({{ date_expr }})
{%- endmacro %}

{% macro bigquery__iso_week(date_expr) -%}
    extract(isoweek from {{ date_expr }})
{%- endmacro %}
