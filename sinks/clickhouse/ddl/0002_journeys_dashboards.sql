-- 0002: journeys, pain points, care actions, and the aggregates the dashboards read.
--
-- How "never double-counts" holds here. The landed tables are ReplacingMergeTree: a
-- re-landed row (retry with another dedup token, replay, re-emitted journey version) is
-- collapsed at merge / FINAL time. A materialized view, however, sees every inserted row,
-- duplicates included, and cannot take anything back. So no view below counts rows
-- (no count(), no sum()): each keeps a set of ids per bucket, as
-- uniqExactState(sipHash64(<id>)) (8 bytes per id; with 64-bit hashes the chance of any
-- collision among 10^7 ids is ~3e-6, where the 32-bit uniq already loses one), and a
-- duplicate only re-adds the same id to the same set. Queries merge the sets (uniqExactMerge), so an id
-- seen in two buckets (say, two days) is still one id; where a bucket key is a function of
-- the id (an event's channel, type and hour), they sum per-bucket counts instead, which
-- reads much less: ~0.15 s for all 10^7 touchpoints on two cores.
-- Views only see rows inserted after they exist: touchpoints landed before this migration
-- are back-filled at the end of this file (a repeat of those inserts is harmless too).

CREATE TABLE IF NOT EXISTS {db}.journeys
(
    journey_id      String,
    customer_id     String,
    tier            LowCardinality(String),
    started_at      DateTime64(3, 'UTC'),
    ended_at        DateTime64(3, 'UTC'),
    channels        Array(LowCardinality(String)),  -- in step order, repeats collapsed
    steps           UInt32,
    outcome         LowCardinality(String),         -- open | completed | abandoned
    score           Float32,                        -- 0-100 experience score
    pain_point_ids  Array(String),
    version         UInt64,
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (customer_id, journey_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- ORDER BY (customer_id, pain_point_id): the sorting key is the dedup key, and
-- pain_point_id = uuid5(rule, customer, anchor event), so customer_id is fixed per id and
-- rows of one pain point always collapse. detected_at stays out of the key on purpose: a
-- timer-fired rule (absence) may get another detection time in a replay, and it must
-- replace, not add. Per-rule / per-day dashboards read pain_points_daily instead; this
-- order serves the customer drill-down (customer_id prefix) and the journey joins.
CREATE TABLE IF NOT EXISTS {db}.pain_points
(
    pain_point_id       String,
    rule_id             LowCardinality(String),
    customer_id         String,
    journey_id          String,
    severity            UInt8,
    channels            Array(LowCardinality(String)),
    anchor_event_id     String,
    evidence_event_ids  Array(String),
    detected_at         DateTime64(3, 'UTC'),  -- event time
    landed_at           DateTime64(3, 'UTC'),
    INDEX idx_journey journey_id TYPE bloom_filter GRANULARITY 2
)
ENGINE = ReplacingMergeTree(landed_at)
ORDER BY (customer_id, pain_point_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per action per status it reached (decided, held, sent, delivered, suppressed,
-- failed, dead_lettered); a later attempt at the same status replaces the earlier row.
CREATE TABLE IF NOT EXISTS {db}.care_actions
(
    action_id      String,                  -- idempotency key: uuid5(pain point, action)
    pain_point_id  String,
    customer_id    String,
    rule_id        LowCardinality(String),
    kind           LowCardinality(String),  -- sms, email, outbound_call, manager_escalation, coupon, webhook
    template       String,
    priority       UInt8,
    channel        LowCardinality(String),
    status         LowCardinality(String),
    reason         String,                  -- why suppressed / held / failed; '' otherwise
    decided_at     DateTime64(3, 'UTC'),    -- event time
    recorded_at    DateTime64(3, 'UTC'),
    attempt        UInt16,
    INDEX idx_customer customer_id TYPE bloom_filter GRANULARITY 2
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (action_id, status)
SETTINGS non_replicated_deduplication_window = 1000;

-- Which customer an identity key belongs to, as the identify stage learned it (a login
-- links anonymous_id, an authenticated call phone_hash, the CRM feed phone / email /
-- loyalty). Touchpoints keep the identity key they arrived with (identity_key is
-- 'kind:value' of the strongest identifier), so a call known by phone only is found as the
-- customer's through this table. One row per key; the latest landing wins.
CREATE TABLE IF NOT EXISTS {db}.identity_links
(
    identity_key  String,                 -- e.g. 'phone_hash:ab12...', 'loyalty_id:L-77'
    customer_id   String,
    linked_at     DateTime64(3, 'UTC'),   -- event time of the link
    landed_at     DateTime64(3, 'UTC'),
    INDEX idx_customer customer_id TYPE bloom_filter GRANULARITY 2
)
ENGINE = ReplacingMergeTree(landed_at)
ORDER BY identity_key
SETTINGS non_replicated_deduplication_window = 1000;

-- The customer drill-down also fetches the evidence events of a customer's pain points
-- that carry only a weak identifier (so another identity_key): find them by event_id.
ALTER TABLE {db}.touchpoints ADD INDEX IF NOT EXISTS idx_event_id event_id
    TYPE bloom_filter GRANULARITY 4;

-- --- events per channel / type / hour ------------------------------------------------------

CREATE TABLE IF NOT EXISTS {db}.touchpoints_hourly
(
    hour       DateTime('UTC'),
    channel    LowCardinality(String),
    type       LowCardinality(String),
    event_ids  AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, channel, type);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.touchpoints_hourly_mv TO {db}.touchpoints_hourly AS
SELECT
    toStartOfHour(occurred_at) AS hour,
    channel,
    type,
    uniqExactState(sipHash64(event_id)) AS event_ids
FROM {db}.touchpoints
GROUP BY hour, channel, type;

-- --- who contacted us, per day ------------------------------------------------------------
-- The identity keys behind contact events (what the built-in repeat_contact rule counts: a
-- call, a store service request or complaint, an SMS reply), one row per day and key: the
-- repeat-contact rate resolves them to customers through identity_links at query time,
-- since contacts mostly arrive with a phone or loyalty id only. Re-inserted events only
-- repeat a (day, key) row, which merges away and which the query reads with DISTINCT.

CREATE TABLE IF NOT EXISTS {db}.contact_keys_daily
(
    day           Date,
    identity_key  String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, identity_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.contact_keys_daily_mv TO {db}.contact_keys_daily AS
SELECT DISTINCT
    toDate(occurred_at) AS day,
    identity_key
FROM {db}.touchpoints
WHERE (channel = 'call_centre' AND type = 'call_started')
    OR (channel = 'store' AND type IN ('service_request', 'complaint'))
    OR (channel = 'sms' AND type = 'reply');

-- --- pain points per rule / channel / day --------------------------------------------------

CREATE TABLE IF NOT EXISTS {db}.pain_points_daily
(
    day             Date,
    rule_id         LowCardinality(String),
    channel         LowCardinality(String),  -- one row per channel of the pain point ('' if none)
    pain_point_ids  AggregateFunction(uniqExact, UInt64),
    customer_ids    AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, rule_id, channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.pain_points_daily_mv TO {db}.pain_points_daily AS
SELECT
    toDate(detected_at) AS day,
    rule_id,
    arrayJoin(if(empty(channels), [''], channels)) AS channel,
    uniqExactState(sipHash64(pain_point_id)) AS pain_point_ids,
    uniqExactState(sipHash64(customer_id)) AS customer_ids
FROM {db}.pain_points
GROUP BY day, rule_id, channel;

-- --- care funnel per kind / status / reason / day ------------------------------------------

CREATE TABLE IF NOT EXISTS {db}.care_actions_daily
(
    day         Date,
    kind        LowCardinality(String),
    status      LowCardinality(String),
    reason      LowCardinality(String),
    action_ids  AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, kind, status, reason);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.care_actions_daily_mv TO {db}.care_actions_daily AS
SELECT
    toDate(decided_at) AS day,
    kind,
    status,
    reason,
    uniqExactState(sipHash64(action_id)) AS action_ids
FROM {db}.care_actions
GROUP BY day, kind, status, reason;

-- --- channel-to-channel transitions (the journey map) --------------------------------------
-- A journey row is re-emitted with a higher version as it grows ([web] -> [web, call_centre]
-- -> [web, call_centre, store]); each version adds its pairs again, but a journey is counted
-- once per pair (a set of journey_ids). Caveat: a pair that a later version no longer has
-- (a late event re-ordering steps) stays counted.

CREATE TABLE IF NOT EXISTS {db}.journey_transitions_daily
(
    day           Date,  -- the journey's start day
    from_channel  LowCardinality(String),
    to_channel    LowCardinality(String),
    journey_ids   AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, from_channel, to_channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.journey_transitions_daily_mv
TO {db}.journey_transitions_daily AS
SELECT
    toDate(started_at) AS day,
    pair.1 AS from_channel,
    pair.2 AS to_channel,
    uniqExactState(sipHash64(journey_id)) AS journey_ids
FROM {db}.journeys
ARRAY JOIN arrayZip(arrayPopBack(channels), arrayPopFront(channels)) AS pair
GROUP BY day, from_channel, to_channel;

-- No view for the experience-score distribution: a closed journey's score can still change
-- in a later version (a survey reply after the goal moves it), and a view cannot move the
-- journey out of the bucket it counted it in. experience_score_by_tier reads journeys FINAL
-- (closed journeys only, one row per journey: far fewer rows than touchpoints).

-- Back-fill the touchpoint aggregates with what 0001 already landed.
INSERT INTO {db}.touchpoints_hourly
SELECT
    toStartOfHour(occurred_at) AS hour,
    channel,
    type,
    uniqExactState(sipHash64(event_id)) AS event_ids
FROM {db}.touchpoints
GROUP BY hour, channel, type;

INSERT INTO {db}.contact_keys_daily
SELECT DISTINCT
    toDate(occurred_at) AS day,
    identity_key
FROM {db}.touchpoints
WHERE (channel = 'call_centre' AND type = 'call_started')
    OR (channel = 'store' AND type IN ('service_request', 'complaint'))
    OR (channel = 'sms' AND type = 'reply');
