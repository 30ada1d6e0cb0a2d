-- Dead letters per reason as a share of all input: rate = dead letters of the reason /
-- (distinct landed touchpoints + all dead letters). The rates add up to the overall rate.
WITH
    (
        SELECT sum(n)
        FROM
        (
            SELECT uniqExactMerge(event_ids) AS n
            FROM {db}.touchpoints_hourly
            GROUP BY hour, channel, type
        )
    ) AS events,
    (SELECT count() FROM {db}.dead_letters FINAL) AS dead_total
SELECT
    reason,
    count() AS dead_letters,
    events + dead_total AS input,
    dead_letters / input AS rate
FROM {db}.dead_letters FINAL
GROUP BY reason
ORDER BY dead_letters DESC, reason
