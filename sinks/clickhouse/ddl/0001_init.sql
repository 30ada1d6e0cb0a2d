-- 0001: landed touchpoints and dead letters.
-- ReplacingMergeTree collapses re-inserted rows (retries, replays) at merge / FINAL time;
-- non_replicated_deduplication_window lets a retried insert with the same
-- insert_deduplication_token be dropped at insert time as well.

CREATE TABLE IF NOT EXISTS {db}.touchpoints
(
    event_id          String,
    channel           LowCardinality(String),
    type              LowCardinality(String),
    occurred_at       DateTime64(3, 'UTC'),
    identity_key      String,
    customer_id       String,
    anonymous_id      String,
    phone_hash        String,
    email_hash        String,
    loyalty_id        String,
    payload           String,
    source_partition  Int32,
    source_offset     Int64,
    ingested_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
-- an event always has the same identity_key and occurred_at, so this dedups on event_id
ORDER BY (identity_key, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dead_letter_id    String,
    reason            LowCardinality(String),
    error             String,
    source_topic      String,
    source_partition  Int32,
    source_offset     Int64,
    raw               String,  -- original bytes, possibly truncated
    raw_size          UInt32,  -- size of the original record in bytes
    received_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY dead_letter_id
SETTINGS non_replicated_deduplication_window = 1000;
