-- Why care actions did not go out (yet): distinct actions per status and reason for the
-- statuses that carry one (suppressed, held, failed, dead_lettered), decided in the last
-- {days} days ending at the latest decision. Read from care_actions FINAL, not from the
-- daily view: a second failed attempt replaces the first one's reason, which a view
-- keyed by reason could not forget (and care actions are few next to touchpoints).
-- param: days UInt32 = 30  how many days of decisions
WITH (SELECT toDate(max(decided_at)) FROM {db}.care_actions) AS latest
SELECT
    status,
    reason,
    count() AS actions
FROM {db}.care_actions FINAL
WHERE status IN ('suppressed', 'held', 'failed', 'dead_lettered')
    AND toDate(decided_at) > latest - {days:UInt32}
GROUP BY status, reason
ORDER BY actions DESC, status, reason
