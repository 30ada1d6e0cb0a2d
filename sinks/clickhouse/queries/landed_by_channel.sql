-- Distinct landed events per channel, all time: the exact per-bucket counts of
-- touchpoint_counts (migration 0004) summed per channel (an event lives in one bucket).
SELECT
    channel,
    sum(events) AS events
FROM {db}.touchpoint_counts
GROUP BY channel
ORDER BY events DESC, channel
