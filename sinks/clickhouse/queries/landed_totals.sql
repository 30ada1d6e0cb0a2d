-- One row: distinct landed events, dead letters, distinct known customers (all time).
-- Events: the exact per-bucket counts of touchpoint_counts, summed (an event lives in one
-- bucket); customers: distinct ids in touchpoint_customers (both migration 0004). Re-landed
-- rows change neither: buckets hold id sets, touchpoint_customers is counted distinct.
SELECT
    t.touchpoints,
    d.dead_letters,
    t.customers
FROM
(
    SELECT
        (SELECT sum(events) FROM {db}.touchpoint_counts) AS touchpoints,
        (SELECT uniqExact(customer_id) FROM {db}.touchpoint_customers) AS customers
) AS t
CROSS JOIN
(
    SELECT count() AS dead_letters
    FROM {db}.dead_letters FINAL
) AS d
