-- Dead letters per reason as a share of all input: rate = dead letters of the reason /
-- (distinct landed touchpoints + all dead letters), all time. The rates add up to the overall
-- rate. Landed touchpoints: the exact per-bucket counts of touchpoint_counts (migration
-- 0004), summed (an event lives in one bucket).
WITH
    (SELECT sum(events) FROM {db}.touchpoint_counts) AS events,
    (SELECT count() FROM {db}.dead_letters FINAL) AS dead_total
SELECT
    reason,
    count() AS dead_letters,
    events + dead_total AS input,
    dead_letters / input AS rate
FROM {db}.dead_letters FINAL
GROUP BY reason
ORDER BY dead_letters DESC, reason
