-- ad_queries: each active ad's top :top_queries search queries by clicks (normalized text).
with

clicks as (
    select ad_id, lower(query) as query from clicks_valid
    where event_type = 'click' and query is not null
),

active as (
    select ad_id from ads_current where status = 'active'
),

counted as (
    select /*+ BROADCAST(a) */ c.ad_id, c.query, count(*) as clicks
    from clicks c
    join active a on c.ad_id = a.ad_id
    group by c.ad_id, c.query
),

ranked as (
    select *, row_number() over (partition by ad_id order by clicks desc, query) as query_rank
    from counted
),

final as (
    select ad_id, query, clicks, query_rank from ranked where query_rank <= :top_queries
)

select * from final
