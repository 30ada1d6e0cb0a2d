-- The lowest-scoring journeys (open ones included: those can still be saved) started in the
-- last {days} days ending at the latest start, current versions only (FINAL), with their
-- steps, channels and the rules of their pain points (in the journey's order).
-- worst is a scalar (an array of tuples), so journeys FINAL is read once: a WITH name AS
-- (subquery) would be inlined, and read again, at each of its three uses.
-- param: days UInt32 = 30  how many days of journey starts
-- param: limit UInt32 = 20  how many journeys
WITH
    (SELECT toDate(max(started_at)) FROM {db}.journeys) AS latest,
    (
        SELECT groupArray((journey_id, customer_id, tier, outcome, score, steps, channels,
                           pain_point_ids, started_at, ended_at))
        FROM
        (
            SELECT
                journey_id, customer_id, tier, outcome, score, steps, channels, pain_point_ids,
                started_at, ended_at
            FROM {db}.journeys FINAL
            WHERE toDate(started_at) > latest - {days:UInt32}
            ORDER BY score ASC, started_at DESC, journey_id
            LIMIT {limit:UInt32}
        )
    ) AS worst,
    (
        SELECT CAST((groupArray(pain_point_id), groupArray(toString(rule_id))),
                    'Map(String, String)')
        FROM {db}.pain_points FINAL
        WHERE customer_id IN (SELECT arrayJoin(arrayMap(w -> w.2, worst)))
            AND pain_point_id IN (SELECT arrayJoin(arrayFlatten(arrayMap(w -> w.8, worst))))
    ) AS rule_of
SELECT
    w.1 AS journey_id,
    w.2 AS customer_id,
    w.3 AS tier,
    w.4 AS outcome,
    round(w.5, 1) AS score,
    w.6 AS steps,
    w.7 AS channels,
    arrayMap(id -> if(mapContains(rule_of, id), rule_of[id], id), w.8) AS pain_points,
    w.9 AS started_at,
    w.10 AS ended_at
FROM (SELECT arrayJoin(worst) AS w)
ORDER BY score ASC, started_at DESC, journey_id
