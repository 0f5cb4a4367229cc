-- Copies of one event (same event_date and event_id, the lakehouse's key) collapse to the first. The key leads
-- with the date, so a date filter from an incremental model reaches the Parquet scan (partition pruning).
-- Rows without their keys cannot be deduplicated or counted; they stay out (the source's not_null tests
-- name them, as errors).
with

source as (

    {{ dedupe(
        source('silver', 'inventory_events'), 'event_date, event_id', 'event_ts, source_uri, source_line',
        where=keys_present(['event_id', 'event_ts', 'event_date', 'store_id', 'product_id'])
    ) }}

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
