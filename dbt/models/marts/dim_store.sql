with

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

final as (

    select
        store_id,
        store_name,
        channel,
        country_code,
        region,
        city,
        timezone

    from stores

)

select * from final
