-- Finished tasks leave the hot table for this one, in batches (`archive_finished`) or when their
-- name is used again, so that claims never wade through them. Several rows per name over time.
CREATE TABLE orchestrate_tasks_history (
    role            text        NOT NULL,
    id              text        NOT NULL,
    payload         bytea       NOT NULL,
    correlation_id  text,
    attempt         integer     NOT NULL,
    state           text        NOT NULL,
    lease_owner     text,
    lease_expires   timestamptz,
    fence           bigint      NOT NULL,
    status          jsonb,
    source          text        NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    claimed_at      timestamptz,
    finished_at     timestamptz,
    archived_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orchestrate_tasks_history_name ON orchestrate_tasks_history (role, id);

-- Archiving looks for finished rows, oldest first.
CREATE INDEX orchestrate_tasks_finished ON orchestrate_tasks (finished_at)
    WHERE state IN ('processed', 'failed');
