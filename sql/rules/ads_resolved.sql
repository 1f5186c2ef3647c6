-- Valid ad rows -> one current version per ad_id.
-- Reads `ads_classified`. Exact duplicate rows and conflicting versions of an ad_id get a
-- reason here; a conflict is settled by the latest `updated_at`, and a tie at the latest
-- instant quarantines every version of that ad (nobody can tell which is current).
with

valid as (
    select * from ads_classified where size(reasons) = 0
),

hashed as (
    select
        *,
        sha2(to_json(named_struct(
            'advertiser_id', advertiser_id, 'campaign_id', campaign_id, 'title', title,
            'selling_points', selling_points, 'brand', brand, 'category', category,
            'status', status
        )), 256) as content_hash
    from valid
),

exact as (
    select
        *,
        row_number() over (
            partition by ad_id, content_hash, updated_at order by source_file, value
        ) as copy_number
    from hashed
),

versions as (
    select
        *,
        size(collect_set(content_hash) over (partition by ad_id)) as n_contents,
        max(updated_at) over (partition by ad_id) as latest_update,
        count(*) over (partition by ad_id, updated_at) as n_at_instant
    from exact
    where copy_number = 1
),

judged as (
    select
        *,
        case
            when n_contents = 1 then null
            when updated_at < latest_update then 'conflicting_duplicate_ad_id'
            when n_at_instant > 1 then 'conflicting_duplicate_ad_id'
        end as conflict
    from versions
),

final as (
    select
        source_file, value, ad_id, advertiser_id, campaign_id, title, selling_points, brand,
        category, status, updated_at, content_hash,
        case when conflict is null then array() else array(conflict) end as reasons,
        case
            when conflict is null then null
            when updated_at < latest_update
                then concat('superseded by the version updated at ', cast(latest_update as string))
            else concat(cast(n_at_instant as string), ' different versions share updated_at ',
                        cast(updated_at as string))
        end as detail
    from judged
    union all
    select
        source_file, value, ad_id, advertiser_id, campaign_id, title, selling_points, brand,
        category, status, updated_at, content_hash,
        array('duplicate_row') as reasons,
        'exact copy of another row' as detail
    from exact
    where copy_number > 1
)

select * from final
