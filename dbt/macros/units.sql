{# Units of an order line's signed `quantity` (> 0 ordered, < 0 returned): units ordered (gross, returns
   excluded) and units returned (positive). #}
{% macro units_ordered(quantity) -%}
    case when {{ quantity }} > 0 then {{ quantity }} else 0 end
{%- endmacro %}

{% macro units_returned(quantity) -%}
    case when {{ quantity }} < 0 then -{{ quantity }} else 0 end
{%- endmacro %}
