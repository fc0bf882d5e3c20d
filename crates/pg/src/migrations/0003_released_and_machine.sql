-- Attempts given back uncharged (a worker's shutdown) are counted apart, so that every attempt
-- keeps a number of its own and `max_attempts` counts `attempt - released`; and the machine
-- that ran (or runs) each attempt is kept after the task finished.
ALTER TABLE orchestrate_tasks ADD COLUMN released integer NOT NULL DEFAULT 0;
ALTER TABLE orchestrate_tasks ADD COLUMN machine text;
ALTER TABLE orchestrate_tasks_history ADD COLUMN released integer NOT NULL DEFAULT 0;
ALTER TABLE orchestrate_tasks_history ADD COLUMN machine text;
