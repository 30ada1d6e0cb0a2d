-- Distinct landed events per channel.
SELECT
    channel,
    count(DISTINCT event_id) AS events
FROM {db}.touchpoints FINAL
GROUP BY channel
ORDER BY events DESC, channel
