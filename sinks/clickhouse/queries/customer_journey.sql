-- One customer's history for the drill-down, in time order. item is one of:
--   journey     a journey (score, outcome in type, tier in status, channels, steps,
--               links = its pain point ids)
--   touchpoint  an event of the customer (journey_id = the journey it falls in, detail = its
--               main attributes, links = rules of the pain points it is evidence of)
--   pain_point  a detected pain point (type = rule, severity, links = evidence event ids)
--   care_action a care action (type = kind, status = latest status, severity = priority,
--               detail = template and reason, links = its pain point id)
-- Touchpoints are the events whose identity key is the customer's (customer_id, or a phone,
-- email, loyalty or anonymous id linked to them in identity_links) plus the evidence events
-- of the customer's pain points.
-- Every source is read deduplicated (FINAL, or one row per event_id).
-- param: customer_id String = ''  the customer to show
WITH
    {customer_id:String} AS cid,
    (
        SELECT groupArray((started_at, ended_at, journey_id))
        FROM {db}.journeys FINAL
        WHERE customer_id = cid
    ) AS spans,
    (
        SELECT groupArray((pain_point_id, journey_id, toString(rule_id), ev))
        FROM {db}.pain_points FINAL
        ARRAY JOIN arrayDistinct(arrayPushFront(evidence_event_ids, anchor_event_id)) AS ev
        WHERE customer_id = cid
    ) AS evidence
SELECT
    at,
    item,
    journey_id,
    channel,
    type,
    status,
    score,
    steps,
    severity,
    ref,
    detail,
    links
FROM
(
    SELECT
        started_at AS at,
        'journey' AS item,
        journey_id,
        arrayStringConcat(channels, ' > ') AS channel,
        toString(outcome) AS type,
        toString(tier) AS status,
        CAST(round(score, 1), 'Nullable(Float64)') AS score,
        steps,
        toUInt8(0) AS severity,
        journey_id AS ref,
        '' AS detail,
        pain_point_ids AS links
    FROM {db}.journeys FINAL
    WHERE customer_id = cid

    UNION ALL

    SELECT
        occurred_at AS at,
        'touchpoint' AS item,
        arrayFirst(s -> occurred_at >= s.1 AND occurred_at <= s.2, spans).3 AS journey_id,
        toString(channel) AS channel,
        toString(type) AS type,
        '' AS status,
        CAST(NULL, 'Nullable(Float64)') AS score,
        toUInt32(0) AS steps,
        toUInt8(0) AS severity,
        event_id AS ref,
        arrayStringConcat(
            arrayMap(
                k -> concat(k, '=', trim(BOTH '"' FROM JSONExtractRaw(payload, k))),
                arrayFilter(
                    k -> JSONHas(payload, k),
                    [
                        'url', 'error_code', 'product', 'order_value', 'call_id', 'wait_seconds',
                        'handle_seconds', 'reason', 'resolved', 'transfers', 'store_id',
                        'amount', 'template', 'reply_text', 'score'
                    ]
                )
            ),
            ' · '
        ) AS detail,
        arrayDistinct(arrayMap(e -> e.3, arrayFilter(e -> e.4 = event_id, evidence))) AS links
    FROM
    (
        SELECT event_id, channel, type, occurred_at, payload
        FROM
        (
            SELECT event_id, channel, type, occurred_at, payload, ingested_at
            FROM {db}.touchpoints
            WHERE identity_key IN
            (
                SELECT concat('customer_id:', cid)
                UNION ALL
                SELECT identity_key FROM {db}.identity_links FINAL WHERE customer_id = cid
            )
            UNION ALL
            SELECT event_id, channel, type, occurred_at, payload, ingested_at
            FROM {db}.touchpoints
            WHERE event_id IN (SELECT arrayJoin(arrayMap(e -> e.4, evidence)))
        )
        ORDER BY event_id, ingested_at DESC
        LIMIT 1 BY event_id
    )

    UNION ALL

    SELECT
        detected_at AS at,
        'pain_point' AS item,
        journey_id,
        arrayStringConcat(channels, ', ') AS channel,
        toString(rule_id) AS type,
        '' AS status,
        CAST(NULL, 'Nullable(Float64)') AS score,
        toUInt32(0) AS steps,
        severity,
        pain_point_id AS ref,
        '' AS detail,
        arrayDistinct(arrayPushFront(evidence_event_ids, anchor_event_id)) AS links
    FROM {db}.pain_points FINAL
    WHERE customer_id = cid

    UNION ALL

    SELECT
        at,
        'care_action' AS item,
        arrayFirst(e -> e.1 = pain_point_id, evidence).2 AS journey_id,
        channel,
        type,
        status,
        CAST(NULL, 'Nullable(Float64)') AS score,
        toUInt32(0) AS steps,
        severity,
        ref,
        detail,
        [pain_point_id] AS links
    FROM
    (
        SELECT
            action_id AS ref,
            min(decided_at) AS at,
            any(pain_point_id) AS pain_point_id,
            toString(any(channel)) AS channel,
            toString(any(kind)) AS type,
            toString(argMax(status, recorded_at)) AS status,
            max(priority) AS severity,
            argMax(reason, recorded_at) AS last_reason,
            concat(any(template), if(last_reason = '', '', concat(' (', last_reason, ')')))
                AS detail
        FROM {db}.care_actions FINAL
        WHERE customer_id = cid
        GROUP BY action_id
    )
)
ORDER BY at, indexOf(['journey', 'touchpoint', 'pain_point', 'care_action'], item), ref
LIMIT 2000
