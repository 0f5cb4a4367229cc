-- Daily on-hand per date x store x product, for every series with inventory events, from its first
-- inventory event to the last day with any event in its store: a day without a snapshot carries the
-- last one forward.
with

inventory as (

    select * from {{ ref('int_inventory_daily') }}

),

stocked as (

    select
        store_id,
        product_id,
        min(inventory_date) as first_date

    from inventory
    group by 1, 2

),

series as (

    select
        stocked.store_id,
        stocked.product_id,
        stocked.first_date,
        all_series.store_last_date

    from stocked
    inner join {{ ref('int_series') }} as all_series
        on
            stocked.store_id = all_series.store_id
            and stocked.product_id = all_series.product_id

),

grid as (

    {{ series_days('series', 'inventory_date') }}

),

joined as (

    select
        grid.inventory_date,
        grid.store_id,
        grid.product_id,
        inventory.on_hand_end as on_hand_observed,
        coalesce(inventory.units_received, 0) as units_received,
        coalesce(inventory.units_written_off, 0) as units_written_off,
        coalesce(inventory.snapshots, 0) as snapshots

    from grid
    left join inventory
        on
            grid.inventory_date = inventory.inventory_date
            and grid.store_id = inventory.store_id
            and grid.product_id = inventory.product_id

),

final as (

    select
        inventory_date,
        store_id,
        product_id,
        last_value(on_hand_observed ignore nulls) over (
            partition by store_id, product_id order by inventory_date
            rows between unbounded preceding and current row
        ) as on_hand_end,
        on_hand_observed is not null as is_observed,
        units_received,
        units_written_off,
        snapshots

    from joined

)

select
    *,
    coalesce(on_hand_end = 0, false) as stockout
from final
