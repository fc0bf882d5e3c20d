-- The queue's tasks: one row per task, claimed in a short transaction (FOR UPDATE SKIP LOCKED)
-- and then held by a lease renewed by heartbeat; `fence` grows with every claim, and a
-- completion names the fence it holds.
CREATE TABLE orchestrate_tasks (
    role            text        NOT NULL,
    id              text        NOT NULL,
    payload         bytea       NOT NULL,
    correlation_id  text,
    attempt         integer     NOT NULL DEFAULT 0,
    state           text        NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'processed', 'failed')),
    lease_owner     text,
    lease_expires   timestamptz,
    fence           bigint      NOT NULL DEFAULT 0,
    status          jsonb,
    source          text        NOT NULL DEFAULT '',
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (role, id)
);

-- Claims look for the oldest queued task of a role; only queued rows are in this index, so
-- finished rows piling up do not slow it down.
CREATE INDEX orchestrate_tasks_queued ON orchestrate_tasks (role, enqueued_at, id)
    WHERE state = 'queued';

-- Recovery looks for leases that ran out.
CREATE INDEX orchestrate_tasks_leases ON orchestrate_tasks (lease_expires)
    WHERE state = 'running';
