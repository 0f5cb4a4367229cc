-- Inventory events summed to one row per day x store x product (days with inventory events only):
-- the day's last snapshot is its end-of-day on-hand; a day that ends with nothing on hand is a stock-out.
-- Incremental like the facts: rebuilds the days from its newest date minus var('lookback_days').
{{ daily_incremental('inventory_date', ['store_id', 'product_id']) }}

{%- set cutoff = incremental_cutoff('inventory_date') %}

with

inventory as (

    select * from {{ ref('stg_silver__inventory_events') }}
    where {{ since_cutoff('inventory_date', cutoff) }}

),

daily as (

    select
        inventory_date,
        store_id,
        product_id,
        {{ last_by('on_hand', 'case when on_hand is null then null else recorded_at end') }} as on_hand_end,
        sum(case when adjustment_units > 0 then adjustment_units else 0 end) as units_received,
        sum(case when adjustment_units < 0 then -adjustment_units else 0 end) as units_written_off,
        count(on_hand) as snapshots,
        count(*) as inventory_events,
        max(recorded_at) as last_recorded_at

    from inventory
    group by 1, 2, 3

),

final as (

    select
        *,
        coalesce(on_hand_end = 0, false) as stockout

    from daily

)

select * from final
{{ storage_order('inventory_date, store_id, product_id') }}
