-- Experience score of closed journeys (completed or abandoned) per customer tier, for
-- journeys ended in the last {days} days ending at the latest end. Read from journeys
-- FINAL (the current version of each journey): a closed journey's score can still move
-- (a survey reply after the goal), which an aggregate view could not follow.
-- poor < 50 <= fair < 80 <= good.
-- param: days UInt32 = 30  how many days of journey ends
WITH (SELECT toDate(max(ended_at)) FROM {db}.journeys WHERE outcome != 'open') AS latest
SELECT
    tier,
    count() AS journeys,
    round(avg(score), 1) AS avg_score,
    round(quantileExact(0.1)(score), 1) AS p10,
    round(quantileExact(0.5)(score), 1) AS median,
    round(quantileExact(0.9)(score), 1) AS p90,
    countIf(score < 50) AS poor,
    countIf(score >= 50 AND score < 80) AS fair,
    countIf(score >= 80) AS good
FROM {db}.journeys FINAL
WHERE outcome != 'open' AND toDate(ended_at) > latest - {days:UInt32}
GROUP BY tier
ORDER BY tier
