-- 0004: exact all-time totals without reading every touchpoint (landed_totals,
-- landed_by_channel, overview, dead_letter_rate).
--
-- The event total was a sum of uniqExactMerge(event_ids) over every (hour, channel, type)
-- bucket of touchpoints_hourly (0002). That is exact, but it reads back and merges every
-- landed event id on each call: ~0.3 s of CPU per 10^7 events. No view can hold a plain
-- count instead: a view sees re-landed rows too and cannot tell them from new ones (0002).
--
-- What is done instead: a refreshable view keeps each bucket's exact count together with
-- the names of the touchpoints_hourly parts it was counted from. Parts never change once
-- written (an insert or a merge writes a new part under a new name), so a bucket whose
-- parts are still exactly the ones its count was taken from still has that count. The
-- view touchpoint_counts takes those counts as they are and merges the id sets of the
-- other buckets (landed or merged since the last refresh) live. Every figure is therefore
-- exact and current whether or not a refresh ran; the refresh only decides how much has
-- to be merged live (after a refresh: only what landed since, a few recent hours).
-- Before the first refresh, and for up to one refresh period after a merge of large parts,
-- a call merges those buckets live: at worst what overview's event total cost up to 0003.

-- --- distinct customers seen on touchpoints ------------------------------------------------
-- One row per customer per insert until merges collapse them; a re-landed row only repeats
-- a customer, and queries count distinct ids (uniqExact), so duplicates never count.

CREATE TABLE IF NOT EXISTS {db}.touchpoint_customers
(
    customer_id  String
)
ENGINE = ReplacingMergeTree
ORDER BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.touchpoint_customers_mv TO {db}.touchpoint_customers AS
SELECT DISTINCT customer_id
FROM {db}.touchpoints
WHERE customer_id != '';

-- --- exact events per (hour, channel, type) bucket, refreshed every minute ----------------
-- The refresh reads touchpoints_hourly once (one consistent set of parts) and replaces the
-- table as a whole. Costs one uniqExactMerge pass over all ids per refresh (~0.3 s of CPU
-- per 10^7 events); with far more events, refresh less often:
-- ALTER TABLE {db}.touchpoints_hourly_counts MODIFY REFRESH EVERY 10 MINUTE.

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.touchpoints_hourly_counts
REFRESH EVERY 1 MINUTE
ENGINE = MergeTree
ORDER BY (hour, channel, type)
AS
SELECT
    hour,
    channel,
    type,
    arraySort(groupArray(_part)) AS parts,
    uniqExactMerge(event_ids) AS events
FROM {db}.touchpoints_hourly
GROUP BY hour, channel, type;

-- Exact distinct events per bucket, now. buckets (a scalar, computed once per query) holds
-- each current bucket with whether its parts are those its refreshed count was taken from
-- (a bucket not refreshed yet has parts [] there, never equal); cached says which way
-- each row was obtained. An event lives in one bucket, so bucket counts add up.
CREATE VIEW IF NOT EXISTS {db}.touchpoint_counts AS
WITH
    (
        SELECT groupArray((c.hour, c.channel, c.type, c.parts = r.parts, r.events))
        FROM
        (
            SELECT hour, channel, type, arraySort(groupArray(_part)) AS parts
            FROM {db}.touchpoints_hourly
            GROUP BY hour, channel, type
        ) AS c
        LEFT JOIN {db}.touchpoints_hourly_counts AS r
            ON r.hour = c.hour AND r.channel = c.channel AND r.type = c.type
    ) AS buckets
SELECT hour, channel, type, events, cached
FROM
(
    SELECT b.1 AS hour, b.2 AS channel, b.3 AS type, toUInt64(b.5) AS events, 1 AS cached
    FROM (SELECT arrayJoin(arrayFilter(x -> x.4, buckets)) AS b)

    UNION ALL

    SELECT hour, channel, type, uniqExactMerge(event_ids) AS events, 0 AS cached
    FROM {db}.touchpoints_hourly
    WHERE (hour, channel, type) IN
    (
        SELECT b.1, b.2, b.3
        FROM (SELECT arrayJoin(arrayFilter(x -> NOT x.4, buckets)) AS b)
    )
    GROUP BY hour, channel, type
);

-- Back-fill: the customers of the touchpoints landed before this migration (the view above
-- only sees later inserts; rows landed meanwhile are counted once either way). The
-- refreshable view needs none: its first refresh runs when it is created, and until then
-- touchpoint_counts merges every bucket live.
INSERT INTO {db}.touchpoint_customers
SELECT DISTINCT customer_id
FROM {db}.touchpoints
WHERE customer_id != '';
