-- Valid ad rows -> one current version per ad_id.
-- Reads `ads_classified`. An exact copy of a row is a duplicate_row. Of the versions of an
-- ad_id, the one with the latest `updated_at` is current and older ones are
-- superseded_ad_version (whether or not their content differs); two different versions at
-- the same latest instant are conflicting_duplicate_ad_id, and both are quarantined:
-- nobody can tell which one is current.
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
        max(updated_at) over (partition by ad_id) as latest_update,
        -- exact copies are gone, so rows sharing an instant differ in content
        count(*) over (partition by ad_id, updated_at) as n_at_instant
    from exact
    where copy_number = 1
),

judged as (
    select
        *,
        case
            when updated_at < latest_update then 'superseded_ad_version'
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
            when conflict = 'superseded_ad_version'
                then concat('superseded by the version updated at ', cast(latest_update as string))
            when conflict is not null
                then concat(cast(n_at_instant as string), ' different versions share updated_at ',
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
