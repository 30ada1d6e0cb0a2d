-- Every pain point's identity (for comparisons with a backtest and drill-downs).
SELECT
    pain_point_id,
    rule_id,
    customer_id,
    anchor_event_id
FROM {db}.pain_points FINAL
ORDER BY pain_point_id
