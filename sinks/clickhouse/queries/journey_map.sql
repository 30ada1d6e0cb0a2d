-- Journey map: how customers move between channels. Distinct journeys with a step on
-- from_channel directly followed by a step on to_channel, for journeys started in the last
-- {days} days ending at the latest start day (re-emitted journey versions count once).
-- param: days UInt32 = 30  how many days of journey starts
WITH (SELECT max(day) FROM {db}.journey_transitions_daily) AS latest
SELECT
    from_channel,
    to_channel,
    uniqExactMerge(journey_ids) AS journeys
FROM {db}.journey_transitions_daily
WHERE day > latest - {days:UInt32}
GROUP BY from_channel, to_channel
ORDER BY journeys DESC, from_channel, to_channel
