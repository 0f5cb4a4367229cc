-- Dead letters from bronze, renamed for reporting: every record that failed the contract or enrichment,
-- with the stage, the reason and where it came from (the payload itself stays in bronze).
with

source as (

    select * from {{ source('bronze', 'dead_letter') }}

),

renamed as (

    select
        failed_at,
        run_id,
        stage,
        reason,
        detail,
        payload_bytes,
        event_id,
        event_type,
        event_date,
        source_uri,
        source_line

    from source

)

select * from renamed
