-- Copies of one event (same event_date and event_id, the lakehouse's key) collapse to the first
-- (macros/dedupe.sql: staged_events). The key leads with the date, so a date filter from an incremental model
-- reaches the Parquet scan (partition pruning). Rows without their keys cannot be deduplicated or counted;
-- they stay out (the source's not_null tests name them, as errors).
with

source as (

    {{ staged_events(source('silver', 'inventory_events')) }}

),

renamed as (

    select
        event_id,
        event_type,
        event_ts as recorded_at,
        event_date as inventory_date,
        store_id,
        product_id,
        case when event_type = 'inventory_snapshot' then quantity end as on_hand,
        case when event_type = 'inventory_adjustment' then quantity end as adjustment_units,
        reason as adjustment_reason,
        source_uri,
        source_line

    from source

)

select * from renamed
