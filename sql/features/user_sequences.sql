-- user_sequences: each user's most recent clicked ads (at most :max_history), oldest first,
-- with consecutive clicks on the same ad collapsed into one.
with

clicks as (
    select user_id, ad_id, event_time from clicks_valid where event_type = 'click'
),

ads as (
    select ad_id, item_hash from ads_current
),

ordered as (
    select /*+ BROADCAST(a) */
        c.user_id,
        c.ad_id,
        c.event_time,
        a.item_hash,
        lag(c.ad_id) over (partition by c.user_id order by c.event_time, c.ad_id) as previous_ad
    from clicks c
    join ads a on c.ad_id = a.ad_id  -- broadcast: one row per ad
),

collapsed as (
    select * from ordered where previous_ad is null or previous_ad <> ad_id
),

ranked as (
    -- same partitioning and order as `ordered`: Spark reuses its sort (no second shuffle)
    select
        *,
        count(*) over (partition by user_id) as clicks_after_collapse,
        row_number() over (partition by user_id order by event_time, ad_id) as position
    from collapsed
),

recent as (
    select * from ranked where position > clicks_after_collapse - :max_history
),

history as (
    select
        user_id,
        -- array_sort on (event_time, ad_id) structs: oldest first, ties by ad_id
        array_sort(collect_list(struct(event_time, ad_id, item_hash))) as clicks,
        max(clicks_after_collapse) as clicks_after_collapse
    from recent
    group by user_id
),

final as (
    select
        user_id,
        transform(clicks, x -> x.ad_id) as ad_ids,
        transform(clicks, x -> x.item_hash) as item_hashes,
        size(clicks) as history_length,
        clicks_after_collapse,
        element_at(clicks, -1).event_time as last_click_at
    from history
)

select * from final
