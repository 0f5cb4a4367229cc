-- Copies of one event (same event_date and event_id, the lakehouse's key) collapse to the first
-- (macros/dedupe.sql: staged_events). The key leads with the date, so a date filter from an incremental model
-- reaches the Parquet scan (partition pruning). Rows without their keys cannot be deduplicated or counted;
-- they stay out (the source's not_null tests name them, as errors).
with

source as (

    {{ staged_events(source('silver', 'order_events')) }}

),

renamed as (

    select
        event_id,
        event_type,
        event_ts as ordered_at,
        event_date as order_date,
        store_id,
        product_id,
        order_id,
        customer_id,
        channel,
        quantity,
        unit_price,
        discount_pct,
        on_promo,
        currency,
        source_uri,
        source_line

    from source

)

select * from renamed
