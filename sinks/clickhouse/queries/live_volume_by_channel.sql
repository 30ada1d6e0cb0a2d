-- Touchpoints per channel per hour over the last {hours} hours of event time, ending at the
-- latest hour that has events (so a replay or a simulation of past days shows too).
-- An event lives in one (hour, channel, type) bucket: per-bucket distinct counts add up.
-- param: hours UInt32 = 24  how many hours to show
WITH (SELECT max(hour) FROM {db}.touchpoints_hourly) AS latest
SELECT
    hour,
    channel,
    sum(n) AS events
FROM
(
    SELECT hour, channel, type, uniqExactMerge(event_ids) AS n
    FROM {db}.touchpoints_hourly
    WHERE hour > latest - toIntervalHour({hours:UInt32})
    GROUP BY hour, channel, type
)
GROUP BY hour, channel
ORDER BY hour, channel
