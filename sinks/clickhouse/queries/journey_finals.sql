-- Every journey's latest version (for comparisons with a backtest and reconciliation):
-- its outcome and step count as of the newest record landed.
SELECT
    journey_id,
    customer_id,
    argMax(outcome, j.version) AS outcome,
    argMax(steps, j.version) AS steps,
    max(j.version) AS last_version
FROM {db}.journeys AS j FINAL
GROUP BY journey_id, customer_id
ORDER BY journey_id
