-- Raw ad lines -> typed columns and the row-level rules each row breaks.
-- Reads the view `raw_ads_lines` (source_file, value: one JSON object per line).
-- A row with an empty `reasons` array is valid; otherwise reasons[0] is its quarantine reason.
with

raw_lines as (
    select source_file, value from raw_ads_lines
),

parsed as (
    select
        source_file,
        value,
        is_valid_utf8(value) as utf8_ok,
        try_parse_json(value) as doc
    from raw_lines
),

typed as (
    select
        source_file,
        value,
        utf8_ok,
        doc,
        try_variant_get(doc, '$', 'map<string, variant>') is not null as is_object,
        trim(try_variant_get(doc, '$.ad_id', 'string')) as ad_id,
        trim(try_variant_get(doc, '$.advertiser_id', 'string')) as advertiser_id,
        trim(try_variant_get(doc, '$.campaign_id', 'string')) as campaign_id,
        trim(try_variant_get(doc, '$.title', 'string')) as title,
        try_variant_get(doc, '$.selling_points', 'array<string>') as selling_points_raw,
        variant_get(doc, '$.selling_points') is not null as has_selling_points,
        trim(try_variant_get(doc, '$.brand', 'string')) as brand,
        lower(trim(try_variant_get(doc, '$.category', 'string'))) as category,
        lower(trim(try_variant_get(doc, '$.status', 'string'))) as status,
        try_variant_get(doc, '$.updated_at', 'string') as updated_at_raw,
        try_to_timestamp(try_variant_get(doc, '$.updated_at', 'string')) as updated_at
    from parsed
),

checked as (
    select
        *,
        filter(
            transform(selling_points_raw, p -> trim(p)),
            p -> p is not null and p <> ''
        ) as selling_points,
        filter(array(
            case when not utf8_ok then 'invalid_utf8' end,
            case when utf8_ok and doc is null then 'malformed_json' end,
            case when doc is not null and not is_object then 'not_a_json_object' end,
            -- an object or array where text belongs (it would read as JSON text; scalars
            -- such as numbers read as their text); the cheap prefix test guards the exact one
            case when exists(array(ad_id, advertiser_id, campaign_id, title, brand, category, status, updated_at_raw), s -> left(s, 1) in ('{', '['))
                then case when exists(
                    transform(array('$.ad_id', '$.advertiser_id', '$.campaign_id', '$.title', '$.brand', '$.category', '$.status', '$.updated_at'),
                              path -> try_variant_get(doc, path, 'map<string, variant>') is not null
                                      or try_variant_get(doc, path, 'array<variant>') is not null),
                    composite -> composite) then 'wrong_type' end
            end,
            case when is_object and (ad_id is null or ad_id = '') then 'missing_ad_id' end,
            case when is_object and (advertiser_id is null or advertiser_id = '') then 'missing_advertiser_id' end,
            case when is_object and (campaign_id is null or campaign_id = '') then 'missing_campaign_id' end,
            case when is_object and title is null then 'missing_title' end,
            case when title = '' then 'empty_title' end,
            case when char_length(title) > :max_title_chars then 'title_too_long' end,
            case when is_object and (brand is null or brand = '') then 'missing_brand' end,
            case when is_object and (category is null or category = '') then 'missing_category' end,
            case when is_object and not has_selling_points then 'missing_selling_points' end,
            case when has_selling_points and selling_points_raw is null then 'invalid_selling_points' end,
            case when size(selling_points_raw) > :max_selling_points then 'too_many_selling_points' end,
            case when is_object and status is null then 'missing_status' end,
            case when status not in ('active', 'paused') then 'invalid_status' end,
            case when is_object and updated_at_raw is null then 'missing_updated_at' end,
            case when updated_at_raw is not null and updated_at is null then 'unparsable_timestamp' end,
            case when updated_at > :interval_end then 'future_timestamp' end,
            case when not (ad_id rlike '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$') or ad_id like '%..%'
                   or not (advertiser_id rlike '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$') or advertiser_id like '%..%'
                then 'invalid_id' end,
            case when concat_ws(' ', title, brand, category, campaign_id, array_join(selling_points_raw, ' '))
                      rlike '[\\x{0000}-\\x{001F}\\x{007F}\\x{FFFD}]'  -- titles are one line
                then 'control_characters' end
        ), r -> r is not null) as reasons
    from typed
),

final as (
    select
        source_file,
        value,
        ad_id,
        advertiser_id,
        campaign_id,
        title,
        selling_points,
        brand,
        category,
        status,
        updated_at,
        reasons
    from checked
)

select * from final
