-- active_ads: the ads the cycle generates for, one row per ad_id.
-- content_hash changes whenever anything the generator reads changes.
with

ads as (
    select * from ads_current
),

final as (
    select
        ad_id,
        advertiser_id,
        campaign_id,
        title,
        selling_points,
        brand,
        category,
        updated_at,
        item_hash,
        content_hash
    from ads
    where status = 'active'
)

select * from final
