-- Raw click lines -> typed columns and the row-level rules each row breaks.
-- Reads `raw_clicks_lines` (source_file, value) and `ads_current` (the valid ads, one row
-- per ad_id). A click on an ad that is not in `ads_current` is quarantined as unknown_ad;
-- an exact copy of another event is quarantined as duplicate_event.
with

raw_lines as (
    select source_file, value from raw_clicks_lines
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
        trim(try_variant_get(doc, '$.user_id', 'string')) as user_id,
        trim(try_variant_get(doc, '$.ad_id', 'string')) as ad_id,
        try_variant_get(doc, '$.event_time', 'string') as event_time_raw,
        try_to_timestamp(try_variant_get(doc, '$.event_time', 'string')) as event_time,
        lower(trim(try_variant_get(doc, '$.event_type', 'string'))) as event_type,
        nullif(trim(regexp_replace(try_variant_get(doc, '$.query', 'string'), '\\s+', ' ')), '')
            as query
    from parsed
),

checked as (
    select /*+ BROADCAST(a) */
        t.*,
        a.ad_id is not null as known_ad,
        filter(array(
            case when not utf8_ok then 'invalid_utf8' end,
            case when utf8_ok and doc is null then 'malformed_json' end,
            case when doc is not null and not is_object then 'not_a_json_object' end,
            -- an object or array where text belongs (it would read as JSON text; scalars
            -- such as numbers read as their text); the cheap prefix test guards the exact one
            case when exists(array(user_id, t.ad_id, event_time_raw, event_type, query), s -> left(s, 1) in ('{', '['))
                then case when exists(
                    transform(array('$.user_id', '$.ad_id', '$.event_time', '$.event_type', '$.query'),
                              path -> try_variant_get(doc, path, 'map<string, variant>') is not null
                                      or try_variant_get(doc, path, 'array<variant>') is not null),
                    composite -> composite) then 'wrong_type' end
            end,
            case when is_object and (user_id is null or user_id = '') then 'missing_user_id' end,
            case when is_object and (t.ad_id is null or t.ad_id = '') then 'missing_ad_id' end,
            case when is_object and event_time_raw is null then 'missing_event_time' end,
            case when event_time_raw is not null and event_time is null then 'unparsable_timestamp' end,
            case when event_time > :interval_end then 'future_timestamp' end,
            case when is_object and event_type is null then 'missing_event_type' end,
            case when event_type not in ('impression', 'click', 'conversion') then 'invalid_event_type' end,
            case when char_length(query) > :max_query_chars then 'query_too_long' end,
            case when concat_ws(' ', user_id, t.ad_id, query)
                      rlike '[\\x{0000}-\\x{001F}\\x{007F}\\x{FFFD}]'
                then 'control_characters' end,
            case when t.ad_id <> '' and a.ad_id is null then 'unknown_ad' end
        ), r -> r is not null) as reasons
    from typed t
    -- the valid ad ids are few (one row per ad): broadcast them, never shuffle the clicks
    left join (select ad_id from ads_current) a on t.ad_id = a.ad_id
),

slim as (
    -- valid rows drop their raw text before the shuffle below: only rejected rows need it
    select
        source_file,
        case when size(reasons) > 0 then value end as value,
        user_id, ad_id, event_time, event_type, query, reasons
    from checked
),

deduplicated as (
    select
        *,
        case when size(reasons) = 0 then row_number() over (
            partition by size(reasons) = 0, user_id, ad_id, event_time, event_type, query
            order by source_file
        ) end as copy_number
    from slim
),

final as (
    select
        source_file,
        case
            when copy_number > 1 then to_json(named_struct(
                'user_id', user_id, 'ad_id', ad_id, 'event_time', event_time,
                'event_type', event_type, 'query', query))
            else value
        end as value,
        user_id,
        ad_id,
        event_time,
        event_type,
        query,
        case when copy_number > 1 then array('duplicate_event') else reasons end as reasons
    from deduplicated
)

select * from final
