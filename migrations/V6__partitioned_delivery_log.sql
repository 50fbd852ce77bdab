-- The delivery log (deliveries, their attempts, event payloads) becomes three tables
-- partitioned by day, so retention drops whole days (`DROP TABLE` of a partition) instead
-- of deleting rows one by one.
--
-- Partition key: the delivery's creation time (`created_at`; for attempts, their
-- delivery's, kept in `delivery_created_at`; for payloads, the event's fan-out time). One
-- partition per UTC day, named <table>_pYYYYMMDD, covering [day, day + 1). There is no
-- DEFAULT partition: rows always go to their own day, and a day is always there before
-- anything is written to it (see wf_log_partitions_ensure below, called by the migration,
-- by every worker at start-up and by the log maintenance, days ahead).
--
-- Keys: a partitioned table's unique constraints must contain the partition key, so the
-- primary keys are (id, created_at), (delivery_id, attempt, delivery_created_at) and
-- (org_id, event_id, created_at). Writers give a delivery the same creation time on every
-- write (fan-out's time, which delivery jobs carry) and look an existing row up by id
-- before inserting, which keeps one row per delivery id.
--
-- No foreign key from attempts to deliveries: a delivery and its attempts are written by
-- one statement and share the partition key, so they live in partitions of the same day
-- and are dropped together. (A composite foreign key would cost a lookup per attempt and
-- would forbid dropping a day of deliveries before the same day of attempts.)
--
-- The existing rows are copied over; the old tables are dropped at the end.

-- Creates the missing daily partitions of the three log tables for every day from
-- `from_day` to `to_day` (inclusive), returns how many tables it created. Concurrent calls
-- are serialised by a transaction advisory lock, so it is safe from every worker at once;
-- days that exist are skipped.
CREATE FUNCTION wf_log_partitions_ensure(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    t       text;
    name    text;
    created integer := 0;
BEGIN
    IF to_day - from_day > 3660 THEN
        RAISE EXCEPTION 'refusing to create % days of partitions', to_day - from_day + 1;
    END IF;
    -- "wf_parts"
    PERFORM pg_advisory_xact_lock(8603669074413778035);
    d := from_day;
    WHILE d <= to_day LOOP
        FOREACH t IN ARRAY ARRAY['deliveries', 'delivery_attempts', 'event_payloads'] LOOP
            name := t || '_p' || to_char(d, 'YYYYMMDD');
            IF to_regclass(quote_ident(name)) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    name, t,
                    (d::timestamp AT TIME ZONE 'UTC'),
                    ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                created := created + 1;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

ALTER TABLE deliveries RENAME TO deliveries_v5;
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_v5;
ALTER TABLE event_payloads RENAME TO event_payloads_v5;
ALTER INDEX deliveries_pkey RENAME TO deliveries_v5_pkey;
ALTER INDEX delivery_attempts_pkey RENAME TO delivery_attempts_v5_pkey;
ALTER INDEX event_payloads_pkey RENAME TO event_payloads_v5_pkey;
ALTER INDEX deliveries_webhook_idx RENAME TO deliveries_v5_webhook_idx;
ALTER INDEX deliveries_webhook_event_idx RENAME TO deliveries_v5_webhook_event_idx;
ALTER INDEX deliveries_webhook_status_idx RENAME TO deliveries_v5_webhook_status_idx;
ALTER INDEX deliveries_org_event_idx RENAME TO deliveries_v5_org_event_idx;
ALTER INDEX deliveries_status_idx RENAME TO deliveries_v5_status_idx;
ALTER INDEX event_payloads_created_idx RENAME TO event_payloads_v5_created_idx;

-- Delivery log. No foreign key to webhooks, on purpose: workers record attempts for a
-- webhook that may be deleted concurrently, and that must not fail. Rows of deleted
-- webhooks are unreachable through the API and age out with their day.
CREATE TABLE deliveries (
    id            text        NOT NULL,
    org_id        text        NOT NULL,
    webhook_id    text        NOT NULL,
    event_id      text        NOT NULL,
    event         text        NOT NULL,
    status        text        NOT NULL
                  CONSTRAINT deliveries_status_check
                  CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempt_count integer     NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE delivery_attempts (
    delivery_id         text        NOT NULL,
    attempt             integer     NOT NULL,
    -- The delivery's created_at: the partition key, shared with the delivery's row.
    delivery_created_at timestamptz NOT NULL,
    at                  timestamptz NOT NULL,
    status_code         integer,
    error               text,
    duration_ms         integer     NOT NULL,
    response_snippet    text,
    PRIMARY KEY (delivery_id, attempt, delivery_created_at)
) PARTITION BY RANGE (delivery_created_at);

-- Event payloads, one row per fanned-out event: the exact bytes every delivery of it
-- sends. Manual retries and replays re-queue a delivery from here, signed afresh.
CREATE TABLE event_payloads (
    org_id      text        NOT NULL,
    event_id    text        NOT NULL,
    body        text        NOT NULL,
    event_ts_ms bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, event_id, created_at)
) PARTITION BY RANGE (created_at);

-- Every day that holds a row, and yesterday, today and a week ahead.
SELECT wf_log_partitions_ensure(
    (LEAST(
        (SELECT min(created_at) FROM deliveries_v5),
        (SELECT min(created_at) FROM event_payloads_v5),
        now() - interval '1 day') AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date + 7);

INSERT INTO deliveries (id, org_id, webhook_id, event_id, event, status, attempt_count,
    last_error, created_at, updated_at)
SELECT id, org_id, webhook_id, event_id, event, status, attempt_count, last_error,
    created_at, updated_at
FROM deliveries_v5;

INSERT INTO delivery_attempts (delivery_id, attempt, delivery_created_at, at, status_code,
    error, duration_ms, response_snippet)
SELECT a.delivery_id, a.attempt, d.created_at, a.at, a.status_code, a.error, a.duration_ms,
    a.response_snippet
FROM delivery_attempts_v5 a JOIN deliveries_v5 d ON d.id = a.delivery_id;

INSERT INTO event_payloads (org_id, event_id, body, event_ts_ms, created_at)
SELECT org_id, event_id, body, event_ts_ms, created_at FROM event_payloads_v5;

DROP TABLE delivery_attempts_v5;
DROP TABLE deliveries_v5;
DROP TABLE event_payloads_v5;

-- Indexes, created on the parents (and so on every partition, present and future) after
-- the copy. Newest-first listing of one webhook's deliveries, by event type or by status
-- (keyset on created_at, id); every delivery of one event across an organisation's
-- webhooks. The V1 index on (status, updated_at) served row-by-row pruning and is gone
-- with it.
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX deliveries_webhook_event_idx ON deliveries (webhook_id, event, created_at DESC, id DESC);
CREATE INDEX deliveries_webhook_status_idx ON deliveries (webhook_id, status, created_at DESC, id DESC);
CREATE INDEX deliveries_org_event_idx ON deliveries (org_id, event_id);
