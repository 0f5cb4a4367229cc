-- Every series has exactly one row per day from its first event to the last day with data in its store:
-- returns the series whose row count differs. A warning: an incremental build does not add the days of a
-- series whose first event arrives later than var lookback_days (`lakehouse transform --full-refresh`).
{{ config(severity='warn') }}

with

series as (

    select * from {{ ref('int_series') }}

),

expected as (

    select
        store_id,
        product_id,
        {{ dbt.datediff('first_date', 'store_last_date', 'day') }} + 1 as expected_days

    from series

),

actual as (

    select
        store_id,
        product_id,
        count(*) as actual_days

    from {{ ref('fact_daily_demand') }}
    group by 1, 2

)

select
    expected.store_id,
    expected.product_id,
    expected.expected_days,
    actual.actual_days

from expected
left join actual
    on
        expected.store_id = actual.store_id
        and expected.product_id = actual.product_id
where coalesce(actual.actual_days, 0) != expected.expected_days
