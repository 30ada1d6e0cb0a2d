-- Pain points per rule in the last {period_days} days (ending at the latest detection day)
-- and in the {period_days} days before, with the change (rules seen in either period);
-- customers = distinct customers hit in the current period.
-- Distinct pain point ids per rule (id sets merged over days and channels).
-- param: period_days UInt32 = 7  length of the current and of the previous period
WITH
    (SELECT max(day) FROM {db}.pain_points_daily) AS latest,
    {period_days:UInt32} AS n
SELECT
    rule_id,
    uniqExactMergeIf(pain_point_ids, day > latest - n) AS pain_points,
    uniqExactMergeIf(pain_point_ids, day <= latest - n) AS previous,
    toInt64(pain_points) - toInt64(previous) AS change,
    if(previous = 0, NULL, round(100 * (pain_points - previous) / previous, 1)) AS change_pct,
    uniqExactMergeIf(customer_ids, day > latest - n) AS customers
FROM {db}.pain_points_daily
WHERE day > latest - 2 * n
GROUP BY rule_id
HAVING pain_points > 0 OR previous > 0
ORDER BY pain_points DESC, rule_id
