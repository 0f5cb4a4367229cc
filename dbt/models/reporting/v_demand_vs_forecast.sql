-- Demand next to the newest daily forecast, one row per date x store x product: the actuals of every series
-- (fact_daily_demand) and the forecast of the latest daily run, with its 80% and 95% intervals and the model
-- the backtest chose, on one time axis. Before any forecast run the forecast columns are null.
-- Names come from the staged dimensions, not dim_*: a failing dim test (an unknown product) must not skip the view.
with

demand as (

    select * from {{ ref('fact_daily_demand') }}

),

forecasts as (

    select * from {{ ref('fact_demand_forecast') }}
    where is_latest_run and freq = 'D'

),

stores as (

    select * from {{ ref('stg_silver__stores') }}

),

products as (

    select * from {{ ref('stg_silver__products') }}

),

joined as (

    select
        coalesce(demand.demand_date, forecasts.forecast_date) as demand_date,
        coalesce(demand.store_id, forecasts.store_id) as store_id,
        coalesce(demand.product_id, forecasts.product_id) as product_id,
        demand.units_ordered as actual_units,
        demand.on_promo,
        demand.stockout,
        demand.is_holiday,
        forecasts.yhat as forecast_units,
        forecasts.yhat_lower_80 as forecast_lower_80,
        forecasts.yhat_upper_80 as forecast_upper_80,
        forecasts.yhat_lower_95 as forecast_lower_95,
        forecasts.yhat_upper_95 as forecast_upper_95,
        forecasts.model as forecast_model,
        forecasts.run_id as forecast_run_id

    from demand
    full outer join forecasts
        on
            demand.demand_date = forecasts.forecast_date
            and demand.store_id = forecasts.store_id
            and demand.product_id = forecasts.product_id

),

final as (

    select
        joined.demand_date,
        joined.store_id,
        stores.store_name,
        joined.product_id,
        products.product_name,
        products.category,
        concat(coalesce(stores.store_name, joined.store_id), ' / ', coalesce(products.product_name, joined.product_id))
            as series_label,
        joined.actual_units,
        joined.forecast_units,
        joined.forecast_lower_80,
        joined.forecast_upper_80,
        joined.forecast_lower_95,
        joined.forecast_upper_95,
        joined.forecast_model,
        joined.forecast_run_id,
        joined.actual_units is null as is_future,
        joined.on_promo,
        joined.stockout,
        joined.is_holiday

    from joined
    left join stores on joined.store_id = stores.store_id
    left join products on joined.product_id = products.product_id

)

select * from final
