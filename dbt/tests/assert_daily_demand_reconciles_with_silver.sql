-- Silver order quantity per day (one copy per event, as staging keeps it) = fact_daily_demand totals per day,
-- over all history. Returns the days that disagree. A warning: an incremental build misses events that arrive later
-- than var lookback_days; `lakehouse transform --full-refresh` brings those days back in line.
--
-- In two steps, so that a build does not deduplicate all of silver again (a window over every event, most of
-- an incremental build's time): first every day's rows and units straight from silver, copies and all,
-- against the fact's order lines and units; a day where they agree has no copies and is reconciled. Only the
-- rows of the days that differ (copies of an event, or events the fact has not counted) are deduplicated as
-- staging does (staged_events) and compared exactly. (A fact that counted the copies themselves would pass
-- step one: the staging model's unique test and the dedupe unit test are there for that.)
{{ config(severity='warn') }}

with

silver_as_received as (

    select
        event_date as demand_date,
        count(*) as order_lines,
        sum({{ units_ordered('quantity') }}) as units_ordered,
        sum({{ units_returned('quantity') }}) as units_returned

    from {{ source('silver', 'order_events') }}
    where {{ event_keys_present() }}
    group by 1

),

fact_daily as (

    select
        demand_date,
        sum(order_lines) as order_lines,
        sum(units_ordered) as units_ordered,
        sum(units_returned) as units_returned

    from {{ ref('fact_daily_demand') }}
    group by 1

),

days_to_check as (

    select coalesce(silver_as_received.demand_date, fact_daily.demand_date) as demand_date
    from silver_as_received
    full outer join fact_daily on silver_as_received.demand_date = fact_daily.demand_date
    where
        coalesce(silver_as_received.order_lines, 0) != coalesce(fact_daily.order_lines, 0)
        or coalesce(silver_as_received.units_ordered, 0) != coalesce(fact_daily.units_ordered, 0)
        or coalesce(silver_as_received.units_returned, 0) != coalesce(fact_daily.units_returned, 0)

),

rows_to_check as (

    select * from {{ source('silver', 'order_events') }}
    where event_date in (select days_to_check.demand_date from days_to_check)

),

silver_daily as (

    select
        event_date as demand_date,
        sum({{ units_ordered('quantity') }}) as units_ordered,
        sum({{ units_returned('quantity') }}) as units_returned

    from ({{ staged_events('rows_to_check') }}) as staged
    group by 1

)

select
    days_to_check.demand_date,
    silver_daily.units_ordered as silver_units_ordered,
    fact_daily.units_ordered as fact_units_ordered,
    silver_daily.units_returned as silver_units_returned,
    fact_daily.units_returned as fact_units_returned

from days_to_check
left join silver_daily on days_to_check.demand_date = silver_daily.demand_date
left join fact_daily on days_to_check.demand_date = fact_daily.demand_date
where
    coalesce(silver_daily.units_ordered, 0) != coalesce(fact_daily.units_ordered, 0)
    or coalesce(silver_daily.units_returned, 0) != coalesce(fact_daily.units_returned, 0)
