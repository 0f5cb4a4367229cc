-- Every store x product with at least one order or inventory event, and the dates it spans.
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

)

select * from series
