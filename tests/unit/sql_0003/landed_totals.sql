-- One row: distinct landed events, dead letters, distinct known customers.
SELECT
    t.touchpoints,
    d.dead_letters,
    t.customers
FROM
(
    SELECT
        count(DISTINCT event_id) AS touchpoints,
        countIf(DISTINCT customer_id, customer_id != '') AS customers
    FROM {db}.touchpoints FINAL
) AS t
CROSS JOIN
(
    SELECT count() AS dead_letters
    FROM {db}.dead_letters FINAL
) AS d
