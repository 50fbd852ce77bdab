-- Custom request headers of a webhook, sent with every delivery. Values may be credentials:
-- they are kept only as a ChaCha20-Poly1305 ciphertext under WF_SECRET_KEY (12-byte nonce
-- || ciphertext || tag of the JSON object name -> value, associated data
-- "<webhook id>:headers"), like the secrets. The names are kept in clear for the API,
-- which shows them with masked values. NULL ciphertext: no custom headers.
ALTER TABLE webhooks ADD COLUMN header_names text[] NOT NULL DEFAULT '{}';
ALTER TABLE webhooks ADD COLUMN headers_ciphertext bytea;

-- Delivery health of each webhook, kept up to date by the delivery log's batched attempt
-- writes (one row per webhook, upserted in the same statement as the attempts) and read
-- by the periodic auto-disable check, which therefore never scans the delivery log.
--   last_success_at  the latest 2xx
--   failing_since    the first failed attempt after it (NULL: not failing)
--   failures         failed attempts since failing_since
--   last_failure_at  the latest failed attempt
-- A table of its own rather than columns of `webhooks`: an UPDATE of `webhooks` fires the
-- change feed (every worker would reload the organisation's subscriptions after every log
-- batch) and would take the row locks management requests take. No foreign key, like the
-- delivery log: a batch may land after its webhook was deleted; orphans are removed by the
-- auto-disable check.
CREATE TABLE webhook_health (
    webhook_id      text        PRIMARY KEY,
    last_success_at timestamptz,
    failing_since   timestamptz,
    failures        integer     NOT NULL DEFAULT 0,
    last_failure_at timestamptz
);
CREATE INDEX webhook_health_failing_idx ON webhook_health (failing_since)
    WHERE failing_since IS NOT NULL;

-- Finding deliveries. Newest first within one webhook, by event type or by status (the
-- status index replaces V2's, whose order did not match the listing's keyset), and every
-- delivery of one event across an organisation's webhooks.
CREATE INDEX deliveries_webhook_event_idx ON deliveries (webhook_id, event, created_at DESC, id DESC);
DROP INDEX deliveries_webhook_status_idx;
CREATE INDEX deliveries_webhook_status_idx ON deliveries (webhook_id, status, created_at DESC, id DESC);
CREATE INDEX deliveries_org_event_idx ON deliveries (org_id, event_id);
