-- items: unique item texts (active and paused ads: users clicked both) and their hash.
-- Item embeddings are cached by item_hash, so an unchanged text is embedded once.
with

ads as (
    select ad_id, item_hash, item_text, title, brand, category from ads_current
),

final as (
    select
        item_hash,
        min_by(item_text, ad_id) as item_text,
        min_by(title, ad_id) as title,
        min_by(brand, ad_id) as brand,
        min_by(category, ad_id) as category,
        count(*) as n_ads
    from ads
    group by item_hash
)

select * from final
