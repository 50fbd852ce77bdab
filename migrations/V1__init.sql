-- WorkFlows outbound webhooks: initial schema.
--
-- Conventions: ids are text (typed, prefixed ids minted by wf-core, or producer-chosen
-- organisation/event ids); every time is timestamptz and is written truncated to
-- milliseconds, which is the precision the API shows.

CREATE TABLE organisations (
    id         text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
);

-- API keys are stored only as the SHA-256 of the token: the plaintext is shown once.
-- A plain (unsalted) hash is enough because tokens carry ~190 bits of randomness, and it
-- lets authentication be one lookup on the unique index.
CREATE TABLE api_keys (
    id         text        PRIMARY KEY,
    org_id     text        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);

-- Secrets are ChaCha20-Poly1305 ciphertexts (12-byte random nonce || ciphertext || tag)
-- under WF_SECRET_KEY, with the webhook id as associated data so a ciphertext cannot be
-- moved to another row. The previous secret survives a rotation until previous_expires_at.
CREATE TABLE webhooks (
    id                         text        PRIMARY KEY,
    org_id                     text        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name                       text        NOT NULL,
    url                        text        NOT NULL,
    events                     text[]      NOT NULL,
    is_active                  boolean     NOT NULL DEFAULT true,
    disabled_reason            text,
    secret_ciphertext          bytea       NOT NULL,
    previous_secret_ciphertext bytea,
    previous_expires_at        timestamptz,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL
);
-- Keyset pagination of one organisation's webhooks, and the subscription lookup.
CREATE INDEX webhooks_org_created_idx ON webhooks (org_id, created_at, id);

-- Change feed for the workers' subscription caches: every write to a webhook tells the
-- listeners which organisation to reload. Postgres folds identical notifications of one
-- transaction into one.
CREATE FUNCTION wf_notify_webhook_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('wf_webhooks', OLD.org_id);
    ELSE
        PERFORM pg_notify('wf_webhooks', NEW.org_id);
        IF TG_OP = 'UPDATE' AND OLD.org_id IS DISTINCT FROM NEW.org_id THEN
            PERFORM pg_notify('wf_webhooks', OLD.org_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhooks_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION wf_notify_webhook_change();

-- Event idempotency: the first response to (org, event id) is replayed for 24 hours.
-- No foreign key to organisations: events published over AMQP name any organisation.
-- `response` is json rather than jsonb so the replayed body is byte-identical (jsonb
-- would reorder keys); it is never queried into.
CREATE TABLE events (
    org_id     text        NOT NULL,
    id         text        NOT NULL,
    event      text        NOT NULL,
    response   json        NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX events_created_idx ON events (created_at);

-- Delivery log. No foreign key to webhooks, on purpose: workers record attempts for a
-- webhook that may be deleted concurrently, and that must not fail (nor cascade a huge
-- delete into the API request). Rows of deleted webhooks are unreachable through the
-- API and age out with prune_deliveries.
CREATE TABLE deliveries (
    id            text        PRIMARY KEY,
    org_id        text        NOT NULL,
    webhook_id    text        NOT NULL,
    event_id      text        NOT NULL,
    event         text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempt_count integer     NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
-- Newest-first listing of one webhook's deliveries (keyset on created_at, id).
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, created_at DESC, id DESC);
-- Replays of dead deliveries and pruning by age.
CREATE INDEX deliveries_status_idx ON deliveries (status, updated_at);

CREATE TABLE delivery_attempts (
    delivery_id      text        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    at               timestamptz NOT NULL,
    status_code      integer,
    error            text,
    duration_ms      integer     NOT NULL,
    response_snippet text,
    PRIMARY KEY (delivery_id, attempt)
);
