-- Every care decision's action id (for comparisons with a backtest and reconciliation).
SELECT DISTINCT action_id
FROM {db}.care_actions FINAL
ORDER BY action_id
