-- One row per order line (orders and returns), deduplicated. Incremental: rebuilds the days from the
-- newest order_date minus var('lookback_days'), so late events within the lookback are picked up.
{{ daily_incremental('order_date', ['event_id']) }}

{%- set cutoff = incremental_cutoff('order_date') %}

with

order_lines as (

    select * from {{ ref('stg_silver__order_events') }}
    where {{ since_cutoff('order_date', cutoff) }}

),

final as (

    select
        event_id,
        event_type,
        ordered_at,
        order_date,
        store_id,
        product_id,
        order_id,
        customer_id,
        channel,
        quantity,
        {{ units_ordered('quantity') }} as units_ordered,
        {{ units_returned('quantity') }} as units_returned,
        unit_price,
        discount_pct,
        unit_price * (1 - discount_pct) as net_unit_price,
        quantity * unit_price * (1 - discount_pct) as net_revenue,
        on_promo,
        currency

    from order_lines

)

select * from final
{{ storage_order('order_date, store_id, product_id') }}
