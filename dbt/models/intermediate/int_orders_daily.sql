-- Order lines summed to one row per day x store x product (days with order events only). Incremental
-- like the facts: rebuilds the days from its newest date minus var('lookback_days').
{{ daily_incremental('demand_date', ['store_id', 'product_id']) }}

{%- set cutoff = incremental_cutoff('demand_date') %}

with

order_lines as (

    select * from {{ ref('stg_silver__order_events') }}
    where {{ since_cutoff('order_date', cutoff) }}

),

daily as (

    select
        order_date as demand_date,
        store_id,
        product_id,
        sum({{ units_ordered('quantity') }}) as units_ordered,
        sum({{ units_returned('quantity') }}) as units_returned,
        sum(quantity * unit_price * (1 - discount_pct)) as net_revenue,
        sum(case when quantity > 0 then quantity * unit_price * (1 - discount_pct) else 0 end) as gross_revenue,
        {{ dbt.bool_or("quantity > 0 and on_promo") }} as on_promo,
        count(*) as order_lines,
        max(ordered_at) as last_ordered_at

    from order_lines
    group by 1, 2, 3

)

select * from daily
{{ storage_order('demand_date, store_id, product_id') }}
