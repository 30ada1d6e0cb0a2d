-- The lowest-scoring journeys (open ones included: those can still be saved) started in the
-- last {days} days ending at the latest start, current versions only (FINAL), with their
-- steps, channels and the rules of their pain points (in the journey's order).
-- param: days UInt32 = 30  how many days of journey starts
-- param: limit UInt32 = 20  how many journeys
WITH
    (SELECT toDate(max(started_at)) FROM {db}.journeys) AS latest,
    worst AS
    (
        SELECT
            journey_id, customer_id, tier, outcome, score, steps, channels, pain_point_ids,
            started_at, ended_at
        FROM {db}.journeys FINAL
        WHERE toDate(started_at) > latest - {days:UInt32}
        ORDER BY score ASC, started_at DESC, journey_id
        LIMIT {limit:UInt32}
    ),
    (
        SELECT CAST((groupArray(pain_point_id), groupArray(toString(rule_id))), 'Map(String, String)')
        FROM {db}.pain_points FINAL
        WHERE customer_id IN (SELECT customer_id FROM worst)
            AND pain_point_id IN (SELECT arrayJoin(pain_point_ids) FROM worst)
    ) AS rule_of
SELECT
    journey_id,
    customer_id,
    tier,
    outcome,
    round(score, 1) AS score,
    steps,
    channels,
    arrayMap(id -> if(mapContains(rule_of, id), rule_of[id], id), pain_point_ids) AS pain_points,
    started_at,
    ended_at
FROM worst
ORDER BY score ASC, started_at DESC, journey_id
