-- Inventory risk per store x product: the latest on-hand (fact_inventory) against the newest daily forecast
-- for the next var risk_horizon_days days after it. risk_level: 'stockout likely' when the forecast exceeds
-- on-hand, 'at risk' when the summed upper 80% bounds do (a conservative bound: the sum of daily upper bounds
-- is wider than the interval of the sum), else 'ok'. Empty until a forecast run exists.
-- Names come from the staged dimensions, not dim_*: a failing dim test (an unknown product) must not skip the view.
{%- set horizon = var('risk_horizon_days', 7) %}
with

latest_stock as (

    {{ dedupe(ref('fact_inventory'), 'store_id, product_id', 'inventory_date desc', where='on_hand_end is not null') }}

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

ahead as (

    select
        latest_stock.store_id,
        latest_stock.product_id,
        latest_stock.inventory_date as stock_date,
        latest_stock.on_hand_end as on_hand,
        {{ dbt.any_value('forecasts.run_id') }} as forecast_run_id,  -- noqa: RF04
        {{ dbt.any_value('forecasts.model') }} as forecast_model,  -- noqa: RF04
        count(*) as forecast_days,
        sum(forecasts.yhat) as forecast_units,
        sum(forecasts.yhat_upper_80) as forecast_upper_80,
        sum(forecasts.yhat_upper_95) as forecast_upper_95

    from latest_stock
    inner join forecasts
        on
            latest_stock.store_id = forecasts.store_id
            and latest_stock.product_id = forecasts.product_id
            and latest_stock.inventory_date < forecasts.forecast_date
            and cast({{ dbt.dateadd('day', horizon, 'latest_stock.inventory_date') }} as date)
            >= forecasts.forecast_date
    group by 1, 2, 3, 4

),

final as (

    select
        ahead.store_id,
        stores.store_name,
        ahead.product_id,
        products.product_name,
        products.category,
        ahead.stock_date,
        ahead.on_hand,
        ahead.forecast_days,
        ahead.forecast_units,
        ahead.forecast_upper_80,
        ahead.forecast_upper_95,
        greatest(ahead.forecast_units - ahead.on_hand, 0) as shortfall_units,
        {{ safe_divide('ahead.on_hand * ahead.forecast_days', 'ahead.forecast_units') }} as days_of_cover,
        case
            when ahead.forecast_units > ahead.on_hand then 'stockout likely'
            when ahead.forecast_upper_80 > ahead.on_hand then 'at risk'
            else 'ok'
        end as risk_level,
        ahead.forecast_model,
        ahead.forecast_run_id

    from ahead
    left join stores on ahead.store_id = stores.store_id
    left join products on ahead.product_id = products.product_id

)

select * from final
