with

source as (

    select * from {{ source('silver', 'products') }}

),

renamed as (

    select
        product_id,
        product_name,
        category,
        base_price,
        currency

    from source

)

select * from renamed
