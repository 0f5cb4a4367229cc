-- Every store x product with any order or inventory event, the dates it spans, and the last date with
-- any event in its store: the end of the series' window in the zero-filled facts (a store that stopped
-- reporting, or a dataset that ends earlier than another in the same lakehouse, is not filled to the end).
with

orders as (

    select * from {{ ref('int_orders_daily') }}

),

inventory as (

    select * from {{ ref('int_inventory_daily') }}

),

event_days as (

    select
        store_id,
        product_id,
        demand_date as event_date
    from orders

    union all

    select
        store_id,
        product_id,
        inventory_date as event_date
    from inventory

),

series as (

    select
        store_id,
        product_id,
        min(event_date) as first_date,
        max(event_date) as last_date

    from event_days
    group by 1, 2

),

final as (

    select
        *,
        max(last_date) over (partition by store_id) as store_last_date

    from series

)

select * from final
