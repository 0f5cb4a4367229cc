with

source as (

    select * from {{ source('silver', 'stores') }}

),

renamed as (

    select
        store_id,
        store_name,
        channel,
        country_code,
        region,
        city,
        timezone

    from source

)

select * from renamed
