with

source as (

    select * from {{ source('ml', 'forecast_runs') }}

),

renamed as (

    select
        run_id,
        created_at,
        freq,
        horizon,
        data_start,
        data_end,
        series as series_count,
        wape,
        wape_seasonal_naive,
        mase,
        bias,
        coverage_80,
        coverage_95,
        code_version

    from source

)

select * from renamed
