-- Pipeline health per day x outcome x entity x stage x reason: events that landed in silver (one row per
-- event, as staged) and records that went to the dead letters, by event date (dead letters whose event time
-- could not be read: the date of the run that rejected them). dead_letters / records over any filter is the
-- dead-letter rate; last_event_at and minutes_since_last_event (whole view, computed at query time) are the
-- freshness. Landed events are counted from the daily intermediate tables (a few rows per day, not every
-- event again on each query); like the facts, they take in events later than var lookback_days on the next
-- --full-refresh.
with

orders as (

    select * from {{ ref('int_orders_daily') }}

),

inventory as (

    select * from {{ ref('int_inventory_daily') }}

),

dead_letters as (

    -- by activity date: the event's date, or the rejecting run's for records without a readable event time
    -- (two branches, not a coalesce: a filter on activity_date then reaches the event_date partitions)
    select
        event_date as activity_date,
        stage,
        reason,
        failed_at
    from {{ ref('stg_bronze__dead_letters') }}
    where event_date is not null

    union all

    select
        cast(failed_at as date) as activity_date,
        stage,
        reason,
        failed_at
    from {{ ref('stg_bronze__dead_letters') }}
    where event_date is null

),

outcomes as (

    select
        demand_date as activity_date,
        'landed' as outcome,
        'order' as entity,
        cast(null as string) as stage,  -- noqa: RF04
        cast(null as string) as reason,
        cast(sum(order_lines) as {{ dbt.type_bigint() }}) as records,
        0 as dead_letters,
        max(last_ordered_at) as last_record_at

    from orders
    group by 1

    union all

    select
        inventory_date as activity_date,
        'landed' as outcome,
        'inventory' as entity,
        cast(null as string) as stage,  -- noqa: RF04
        cast(null as string) as reason,
        cast(sum(inventory_events) as {{ dbt.type_bigint() }}) as records,
        0 as dead_letters,
        max(last_recorded_at) as last_record_at

    from inventory
    group by 1

    union all

    select
        activity_date,
        'dead_letter' as outcome,
        cast(null as string) as entity,
        stage,
        reason,
        count(*) as records,
        count(*) as dead_letters,
        max(failed_at) as last_record_at

    from dead_letters
    group by 1, 4, 5

),

last_event as (

    -- from the daily tables, not from outcomes: a filter on activity_date (a test's window, a dashboard's
    -- date range) then reaches their scans, where a window over outcomes would read every day first
    select max(last_event_at) as last_event_at
    from (
        select max(last_ordered_at) as last_event_at from orders
        union all
        select max(last_recorded_at) as last_event_at from inventory
    ) as newest

),

final as (

    select
        outcomes.activity_date,
        outcomes.outcome,
        outcomes.entity,
        outcomes.stage,
        outcomes.reason,
        outcomes.records,
        outcomes.dead_letters,
        outcomes.last_record_at,
        last_event.last_event_at

    from outcomes
    cross join last_event

)

select
    *,
    {{ dbt.datediff('last_event_at', 'current_timestamp', 'minute') }} as minutes_since_last_event
from final
