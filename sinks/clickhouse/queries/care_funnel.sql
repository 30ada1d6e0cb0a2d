-- Care funnel: distinct actions per kind that reached each status (decided -> held -> sent
-- -> delivered; suppressed, failed, dead_lettered), decided in the last {days} days ending
-- at the latest decision day. stage orders the statuses; an action has one kind, so
-- summing a status over kinds is exact.
-- param: days UInt32 = 30  how many days of decisions
WITH (SELECT max(day) FROM {db}.care_actions_daily) AS latest
SELECT
    kind,
    status,
    indexOf(
        ['decided', 'held', 'sent', 'delivered', 'suppressed', 'failed', 'dead_lettered'],
        toString(status)
    ) AS stage,
    uniqExactMerge(action_ids) AS actions
FROM {db}.care_actions_daily
WHERE day > latest - {days:UInt32}
GROUP BY kind, status
ORDER BY kind, stage, status
