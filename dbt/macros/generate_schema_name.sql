{# Models with a custom schema (the marts: gold) land in exactly that schema/dataset, not <target>_gold,
   so the names match pipelines.config.Settings on both warehouses. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
