-- Dead letters per reason.
SELECT
    reason,
    count() AS n
FROM {db}.dead_letters FINAL
GROUP BY reason
ORDER BY n DESC, reason
