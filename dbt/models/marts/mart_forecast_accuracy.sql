-- Forecast accuracy per run x store x product, on the periods whose actuals are in (see
-- fact_demand_forecast), beside the backtest score of the model the run chose for the series.
with

forecast_vs_actual as (

    select * from {{ ref('fact_demand_forecast') }}

),

backtests as (

    select * from {{ ref('stg_ml__backtest_metrics') }}
    where is_chosen

),

scored as (

    select
        run_id,
        freq,
        store_id,
        product_id,
        {{ dbt.any_value('model') }} as model,  -- noqa: RF04
        count(*) as periods_forecast,
        count(actual_units) as periods_with_actuals,
        sum(case when actual_units is not null then yhat end) as forecast_units,
        sum(actual_units) as actual_units,
        sum(abs_error) as abs_error,
        avg(case when in_interval_80 then 1.0 when in_interval_80 is not null then 0.0 end) as coverage_80,
        avg(case when in_interval_95 then 1.0 when in_interval_95 is not null then 0.0 end) as coverage_95,
        {{ dbt.bool_or('is_latest_run') }} as is_latest_run

    from forecast_vs_actual
    group by 1, 2, 3, 4

),

final as (

    select
        scored.run_id,
        scored.freq,
        scored.store_id,
        scored.product_id,
        scored.model,
        scored.periods_forecast,
        scored.periods_with_actuals,
        scored.forecast_units,
        scored.actual_units,
        scored.abs_error,
        {{ safe_divide('scored.abs_error', 'scored.actual_units') }} as wape,
        {{ safe_divide('scored.forecast_units - scored.actual_units', 'scored.actual_units') }} as bias,
        scored.coverage_80,
        scored.coverage_95,
        backtests.wape as backtest_wape,
        backtests.mase as backtest_mase,
        scored.is_latest_run

    from scored
    left join backtests
        on
            scored.run_id = backtests.run_id
            and scored.store_id = backtests.store_id
            and scored.product_id = backtests.product_id

)

select * from final
