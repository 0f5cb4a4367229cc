-- Forecast accuracy per run x store x product x model: every model's backtest score (rolling-origin folds),
-- beside the seasonal-naive baseline of the same series and, for the model the run chose, its accuracy on
-- the actuals that arrived after the run (mart_forecast_accuracy). abs_error = wape x actual_units, so a
-- weighted WAPE over any filter is sum(abs_error) / sum(actual_units). Empty until a forecast run exists.
-- Names come from the staged dimensions, not dim_*: a failing dim test (an unknown product) must not skip the view.
{%- set baseline = var('baseline_model', 'snaive') %}
with

backtests as (

    select * from {{ ref('stg_ml__backtest_metrics') }}

),

runs as (

    select
        *,
        created_at = max(created_at) over (partition by freq) as is_latest_run
    from {{ ref('stg_ml__forecast_runs') }}

),

baseline as (

    select
        run_id,
        store_id,
        product_id,
        wape as baseline_wape,
        mase as baseline_mase

    from backtests
    where model = '{{ baseline }}'

),

live as (

    select * from {{ ref('mart_forecast_accuracy') }}

),

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

products as (

    select * from {{ ref('stg_silver__products') }}

),

final as (

    select
        backtests.run_id,
        runs.created_at as run_created_at,
        runs.freq,
        runs.is_latest_run,
        backtests.store_id,
        stores.store_name,
        backtests.product_id,
        products.product_name,
        products.category,
        backtests.model,
        backtests.is_chosen,
        backtests.folds,
        backtests.points,
        backtests.actual_units,
        backtests.wape * backtests.actual_units as abs_error,
        backtests.wape,
        backtests.mase,
        backtests.bias,
        backtests.coverage_80,
        backtests.coverage_95,
        baseline.baseline_wape,
        baseline.baseline_mase,
        baseline.baseline_wape * backtests.actual_units as baseline_abs_error,
        {{ safe_divide('backtests.wape', 'baseline.baseline_wape') }} as wape_vs_baseline,
        live.periods_with_actuals as live_periods,
        live.wape as live_wape,
        live.coverage_80 as live_coverage_80,
        live.coverage_95 as live_coverage_95,
        backtests.note

    from backtests
    inner join runs on backtests.run_id = runs.run_id
    left join baseline
        on
            backtests.run_id = baseline.run_id
            and backtests.store_id = baseline.store_id
            and backtests.product_id = baseline.product_id
    left join live
        on
            backtests.is_chosen
            and backtests.run_id = live.run_id
            and backtests.store_id = live.store_id
            and backtests.product_id = live.product_id
    left join stores on backtests.store_id = stores.store_id
    left join products on backtests.product_id = products.product_id

)

select * from final
