-- Products, plus an unknown member for any product_id that has events but is missing from the product
-- dimension (the source's relationships test flags those as errors), so facts always join.
with

products as (

    select * from {{ ref('stg_silver__products') }}

),

series as (

    select * from {{ ref('int_series') }}

),

product_span as (

    select
        product_id,
        min(first_date) as first_event_date,
        max(last_date) as last_event_date,
        count(*) as stores_with_events

    from series
    group by 1

),

final as (

    select
        coalesce(products.product_id, product_span.product_id) as product_id,
        products.product_name,
        products.category,
        products.base_price,
        products.currency,
        product_span.first_event_date,
        product_span.last_event_date,
        coalesce(product_span.stores_with_events, 0) as stores_with_events,
        products.product_id is not null as is_known

    from products
    full outer join product_span on products.product_id = product_span.product_id

)

select * from final
