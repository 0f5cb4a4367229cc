-- Daily on-hand per date x store x product, for every series with inventory events, from its first
-- inventory event to the last day with any event in its store: a day without a snapshot carries the
-- last one forward. Incremental like the other facts: rebuilds the days from its newest date minus
-- var('lookback_days'), carrying forward from this table's row of the day before.
{{ daily_incremental('inventory_date', ['store_id', 'product_id']) }}

{%- set cutoff = incremental_cutoff('inventory_date') %}

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

    {{ series_days('series', 'inventory_date', cutoff) }}

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

carried as (

    -- on-hand at the end of the day before the rebuilt days (none on a full build)
    {%- if cutoff %}
        select
            store_id,
            product_id,
            on_hand_end
        from {{ this }}
        where inventory_date = {{ day_before(cutoff) }}
    {%- else %}
        select
            store_id,
            product_id,
            on_hand_observed as on_hand_end
        from joined
        where false
    {%- endif %}

),

final as (

    select
        joined.inventory_date,
        joined.store_id,
        joined.product_id,
        coalesce(
            last_value(joined.on_hand_observed ignore nulls) over (
                partition by joined.store_id, joined.product_id order by joined.inventory_date
                rows between unbounded preceding and current row
            ),
            carried.on_hand_end
        ) as on_hand_end,
        joined.on_hand_observed is not null as is_observed,
        joined.units_received,
        joined.units_written_off,
        joined.snapshots

    from joined
    left join carried
        on
            joined.store_id = carried.store_id
            and joined.product_id = carried.product_id

)

select
    *,
    coalesce(on_hand_end = 0, false) as stockout
from final
{{ storage_order('inventory_date, store_id, product_id') }}
