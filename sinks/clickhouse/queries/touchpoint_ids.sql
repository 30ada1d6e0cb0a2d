-- Every landed event id (reconciliation: which events of a log are in ClickHouse, e.g.
-- across the chDB directories of several embedded workers).
SELECT event_id
FROM {db}.touchpoints FINAL
ORDER BY event_id
