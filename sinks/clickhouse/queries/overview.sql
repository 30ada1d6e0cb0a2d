-- Headline figures for the ops page tiles and the Grafana stat row: one row, all time.
-- events: distinct landed touchpoints (the exact per-bucket counts of touchpoint_counts,
-- migration 0004, summed: an event lives in one bucket); dead_letter_rate: dead letters /
-- (events + dead letters); pain_points and care_actions: distinct ids (a pain point has one
-- rule, an action one kind); journeys and open_journeys: current journey versions.
SELECT
    e.events AS events,
    d.dead_letters AS dead_letters,
    if(e.events + d.dead_letters = 0, 0, d.dead_letters / (e.events + d.dead_letters))
        AS dead_letter_rate,
    p.pain_points AS pain_points,
    c.care_actions AS care_actions,
    c.care_delivered AS care_delivered,
    j.journeys AS journeys,
    j.open_journeys AS open_journeys
FROM
(
    SELECT sum(events) AS events
    FROM {db}.touchpoint_counts
) AS e
CROSS JOIN (SELECT count() AS dead_letters FROM {db}.dead_letters FINAL) AS d
CROSS JOIN
(
    SELECT sum(n) AS pain_points
    FROM (SELECT uniqExactMerge(pain_point_ids) AS n FROM {db}.pain_points_daily GROUP BY rule_id)
) AS p
CROSS JOIN
(
    SELECT sum(n) AS care_actions, sum(delivered) AS care_delivered
    FROM
    (
        SELECT
            uniqExactMerge(action_ids) AS n,
            uniqExactMergeIf(action_ids, status = 'delivered') AS delivered
        FROM {db}.care_actions_daily
        GROUP BY kind
    )
) AS c
CROSS JOIN
(
    SELECT count() AS journeys, countIf(outcome = 'open') AS open_journeys
    FROM {db}.journeys FINAL
) AS j
