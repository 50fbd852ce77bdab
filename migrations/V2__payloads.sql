-- Event payloads, one row per fanned-out event: the exact bytes every delivery of it
-- sends. Manual retries and replays re-queue a delivery from here, signed afresh.
-- Written by the workers' batched log writer, pruned with the delivery log.
CREATE TABLE event_payloads (
    org_id      text        NOT NULL,
    event_id    text        NOT NULL,
    body        text        NOT NULL,
    event_ts_ms bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, event_id)
);
CREATE INDEX event_payloads_created_idx ON event_payloads (created_at);

-- Replays select one webhook's deliveries in a status over a time window.
CREATE INDEX deliveries_webhook_status_idx ON deliveries (webhook_id, status, created_at);
