with

source as (

    select * from {{ source('ml', 'forecasts') }}

),

renamed as (

    select
        run_id,
        store_id,
        product_id,
        forecast_date,
        model,
        yhat,
        yhat_lower_80,
        yhat_upper_80,
        yhat_lower_95,
        yhat_upper_95

    from source

)

select * from renamed
