-- One row per date x store x product, zero-filled: every series (store x product with any order or
-- inventory event) has a row for each day from its first event to the last day with any event in its
-- store. Incremental: rebuilds the days from the newest demand_date minus var('lookback_days').
{{ daily_incremental('demand_date', ['store_id', 'product_id']) }}

{%- set cutoff = incremental_cutoff('demand_date') %}

with

series as (

    select * from {{ ref('int_series') }}

),

orders as (

    select * from {{ ref('int_orders_daily') }}
    where {{ since_cutoff('demand_date', cutoff) }}

),

inventory as (

    select * from {{ ref('int_inventory_daily') }}
    where {{ since_cutoff('inventory_date', cutoff) }}

),

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

holidays as (

    select * from {{ ref('public_holidays') }}

),

grid as (

    {{ series_days('series', 'demand_date', cutoff) }}

),

final as (

    select
        grid.demand_date,
        grid.store_id,
        grid.product_id,
        coalesce(orders.units_ordered, 0) as units_ordered,
        coalesce(orders.units_returned, 0) as units_returned,
        coalesce(orders.units_ordered, 0) - coalesce(orders.units_returned, 0) as net_units,
        coalesce(orders.net_revenue, 0) as net_revenue,
        {{ safe_divide('orders.gross_revenue', 'orders.units_ordered') }} as avg_unit_price,
        coalesce(orders.on_promo, false) as on_promo,
        coalesce(inventory.stockout, false) as stockout,
        inventory.on_hand_end,
        holidays.holiday_date is not null as is_holiday,
        coalesce(orders.order_lines, 0) as order_lines

    from grid
    left join orders
        on
            grid.demand_date = orders.demand_date
            and grid.store_id = orders.store_id
            and grid.product_id = orders.product_id
    left join inventory
        on
            grid.demand_date = inventory.inventory_date
            and grid.store_id = inventory.store_id
            and grid.product_id = inventory.product_id
    left join stores on grid.store_id = stores.store_id
    left join holidays
        on
            grid.demand_date = holidays.holiday_date
            and stores.country_code = holidays.country_code

)

select * from final
{{ storage_order('demand_date, store_id, product_id') }}
