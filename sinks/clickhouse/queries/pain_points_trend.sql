-- Pain points per day per rule (detection day, event time) over the last {days} days
-- ending at the latest detection day. Distinct ids (id sets merged over channels).
-- param: days UInt32 = 30  how many days to show
WITH (SELECT max(day) FROM {db}.pain_points_daily) AS latest
SELECT
    day,
    rule_id,
    uniqExactMerge(pain_point_ids) AS pain_points
FROM {db}.pain_points_daily
WHERE day > latest - {days:UInt32}
GROUP BY day, rule_id
ORDER BY day, rule_id
