with

source as (

    select * from {{ source('ml', 'backtest_metrics') }}

),

renamed as (

    select
        run_id,
        store_id,
        product_id,
        model,
        chosen as is_chosen,
        folds,
        points,
        actual_units,
        wape,
        mase,
        bias,
        coverage_80,
        coverage_95,
        note

    from source

)

select * from renamed
