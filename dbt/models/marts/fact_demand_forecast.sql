-- Forecasts next to actuals: one row per forecast run x store x product x forecast period. Daily runs
-- compare with the day's units ordered, weekly runs with the week's (Monday to Sunday); actuals stay
-- null until the whole period has data. Empty until the forecasting job has written a run.
with

forecasts as (

    select * from {{ ref('stg_ml__forecasts') }}

),

runs as (

    select * from {{ ref('stg_ml__forecast_runs') }}

),

demand as (

    select * from {{ ref('fact_daily_demand') }}

),

latest_data as (

    select max(demand_date) as last_demand_date from demand

),

periods as (

    select
        forecasts.*,
        runs.freq,
        runs.created_at as run_created_at,
        cast(
            {{ dbt.dateadd('day', "case when runs.freq = 'W' then 6 else 0 end", 'forecasts.forecast_date') }}
            as date
        ) as period_end_date,
        runs.created_at = max(runs.created_at) over (partition by runs.freq) as is_latest_run

    from forecasts
    inner join runs on forecasts.run_id = runs.run_id

),

actuals as (

    select
        periods.run_id,
        periods.store_id,
        periods.product_id,
        periods.forecast_date,
        sum(demand.units_ordered) as actual_units,
        count(demand.demand_date) as days_with_data

    from periods
    inner join demand
        on
            periods.store_id = demand.store_id
            and periods.product_id = demand.product_id
            and demand.demand_date between periods.forecast_date and periods.period_end_date
    group by 1, 2, 3, 4

),

final as (

    select
        periods.run_id,
        periods.freq,
        periods.model,
        periods.store_id,
        periods.product_id,
        periods.forecast_date,
        periods.period_end_date,
        periods.yhat,
        periods.yhat_lower_80,
        periods.yhat_upper_80,
        periods.yhat_lower_95,
        periods.yhat_upper_95,
        case when periods.period_end_date <= latest_data.last_demand_date then actuals.actual_units end
            as actual_units,
        periods.run_created_at,
        periods.is_latest_run

    from periods
    cross join latest_data
    left join actuals
        on
            periods.run_id = actuals.run_id
            and periods.store_id = actuals.store_id
            and periods.product_id = actuals.product_id
            and periods.forecast_date = actuals.forecast_date

)

select
    *,
    abs(yhat - actual_units) as abs_error,
    actual_units between yhat_lower_80 and yhat_upper_80 as in_interval_80,
    actual_units between yhat_lower_95 and yhat_upper_95 as in_interval_95
from final
