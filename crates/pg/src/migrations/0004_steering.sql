-- Steering shared by every machine: a role's pause and a task's cancel request, written by
-- `orchestrate pause`/`cancel` on any machine and followed by every role process of the role.
CREATE TABLE orchestrate_controls (
    kind     text        NOT NULL CHECK (kind IN ('pause', 'cancel')),
    role     text        NOT NULL,
    -- The task, for a cancel request; empty for a pause.
    id       text        NOT NULL DEFAULT '',
    by_whom  text        NOT NULL,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, role, id)
);

-- The role processes of every machine, as each last said (every few seconds): what
-- `swarm status` shows of the whole cluster.
CREATE TABLE orchestrate_workers (
    machine     text        NOT NULL,
    role        text        NOT NULL,
    replica     integer     NOT NULL,
    pid         integer     NOT NULL,
    labels      text        NOT NULL DEFAULT '',
    runs        boolean     NOT NULL,
    workspace   text        NOT NULL DEFAULT '',
    holding     integer     NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (machine, role, replica)
);

-- What every machine's attempts spent, for the swarm's daily budget across machines (each
-- machine also keeps its own ledger file).
CREATE TABLE orchestrate_spending (
    day       date             NOT NULL,
    machine   text             NOT NULL,
    run_id    text             NOT NULL,
    role      text             NOT NULL,
    task      text             NOT NULL,
    attempt   integer          NOT NULL,
    tokens    bigint           NOT NULL,
    cost_usd  double precision NOT NULL,
    at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, machine, run_id)
);

-- The swarm's circuit breakers (one per runtime), as the machine that last changed each left it:
-- a runtime that fails on one machine (a rate limit, a login gone) stops claims on all of them.
CREATE TABLE orchestrate_breakers (
    runtime     text NOT NULL PRIMARY KEY,
    state       text NOT NULL,
    machine     text NOT NULL,
    -- When the machine changed it (RFC 3339, UTC, as it wrote it): the newest wins.
    updated_at  text NOT NULL
);
