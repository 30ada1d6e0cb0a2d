-- Care actions per status over everything landed: distinct action ids that reached each
-- status (a held action that was later sent counts in both), from care_actions FINAL.
SELECT
    toString(status) AS status,
    uniqExact(action_id) AS actions
FROM {db}.care_actions FINAL
GROUP BY status
ORDER BY status
