-- Stores, plus an unknown member for any store_id that has events but is missing from the store dimension
-- (the source's relationships test flags those as errors), so facts always join.
with

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

series as (

    select * from {{ ref('int_series') }}

),

stores_with_events as (

    select distinct store_id from series

),

final as (

    select
        coalesce(stores.store_id, stores_with_events.store_id) as store_id,
        stores.store_name,
        stores.channel,
        stores.country_code,
        stores.region,
        stores.city,
        stores.timezone,
        stores.store_id is not null as is_known

    from stores
    full outer join stores_with_events on stores.store_id = stores_with_events.store_id

)

select * from final
