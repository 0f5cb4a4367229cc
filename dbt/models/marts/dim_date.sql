-- One row per day from the first event to the last event or forecast date, with the public holidays of
-- the countries the stores are in.
with

series as (

    select * from {{ ref('int_series') }}

),

forecasts as (

    select * from {{ ref('stg_ml__forecasts') }}

),

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

holidays as (

    select * from {{ ref('public_holidays') }}

),

bounds as (

    select
        min(series.first_date) as first_date,
        greatest(
            max(series.last_date),
            coalesce((select max(forecasts.forecast_date) from forecasts), max(series.last_date))
        ) as last_date

    from series

),

days as (

    {{ days_between('bounds', 'first_date', 'last_date') }}

),

store_holidays as (

    select
        holidays.holiday_date,
        {{ dbt.listagg("holidays.country_code || ': ' || holidays.holiday_name", "'; '",
                       "order by holidays.country_code") }} as holiday_names,
        count(*) as holiday_countries

    from holidays
    where holidays.country_code in (select stores.country_code from stores)
    group by 1

),

final as (

    select
        days.date_day,
        cast(extract(year from days.date_day) as {{ dbt.type_int() }}) as year_number,
        cast(extract(quarter from days.date_day) as {{ dbt.type_int() }}) as quarter_number,
        cast(extract(month from days.date_day) as {{ dbt.type_int() }}) as month_number,
        cast(extract(day from days.date_day) as {{ dbt.type_int() }}) as day_of_month,
        cast({{ iso_day_of_week('days.date_day') }} as {{ dbt.type_int() }}) as iso_day_of_week,
        cast({{ iso_week('days.date_day') }} as {{ dbt.type_int() }}) as iso_week,
        cast({{ dbt.dateadd('day', '1 - ' ~ iso_day_of_week('days.date_day'), 'days.date_day') }} as date)
            as week_start_date,
        {{ iso_day_of_week('days.date_day') }} >= 6 as is_weekend,
        store_holidays.holiday_date is not null as is_holiday,
        coalesce(store_holidays.holiday_countries, 0) as holiday_countries,
        store_holidays.holiday_names

    from days
    left join store_holidays on days.date_day = store_holidays.holiday_date

)

select * from final
