{# The zero-filled grid of the daily facts: one row (`date_alias`, store_id, product_id) per day of each
   series in `series` (a relation or CTE with store_id, product_id, first_date and store_last_date), from
   its first_date to its store_last_date; with `cutoff`, only the days on or after it. #}
{% macro series_days(series, date_alias, cutoff=none) -%}
    select
        days.date_day as {{ date_alias }},
        series.store_id,
        series.product_id

    from {{ series }} as series
    inner join (
        {{ days_between(
            '(select min(first_date) as first_date, max(store_last_date) as last_date from ' ~ series ~ ')',
            'first_date', 'last_date'
        ) }}
    ) as days
        on series.first_date <= days.date_day and series.store_last_date >= days.date_day
    where {{ since_cutoff('days.date_day', cutoff) }}
{%- endmacro %}
