-- System events (webhook.created, webhook.disabled, api_key.deleted, ...) are parked here
-- before they are published and removed once the broker has confirmed them. One that the
-- broker did not take (an outage, a restart) stays parked and a relay in every service
-- publishes it when it is due: a broker outage delays a system event, it never loses one.
CREATE TABLE event_outbox (
    id              bigserial   PRIMARY KEY,
    org_id          text        NOT NULL,
    event_id        text        NOT NULL,
    event           text        NOT NULL,
    -- The event exactly as it goes on the wire (JSON), published as is.
    body            text        NOT NULL,
    -- The x-wf-source header it is published with.
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Publishing tries by a relay so far (the emitting request's own try is not counted).
    attempts        integer     NOT NULL DEFAULT 0,
    -- When a relay may (next) publish it: leaves the emitter time to publish it itself,
    -- and is a lease while a relay holds it.
    next_attempt_at timestamptz NOT NULL
);
CREATE INDEX event_outbox_due_idx ON event_outbox (next_attempt_at, id);
