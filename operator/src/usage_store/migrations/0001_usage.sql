-- tokenwarden usage store, migration 1: the per-attempt usage table.
-- One row per usage record a sidecar reported (one upstream attempt),
-- exactly once by (sidecar_id, seq). Partitioned by month of `ts` (the
-- request time, which a resent record carries unchanged, so a resend always
-- lands in the partition of its first copy and meets its key there).
CREATE TABLE tokenwarden.usage (
    sidecar_id          text        NOT NULL,
    seq                 bigint      NOT NULL,
    ts                  timestamptz NOT NULL,
    ingested_at         timestamptz NOT NULL DEFAULT now(),
    namespace           text        NOT NULL,
    workload            text        NOT NULL,
    pod                 text        NOT NULL,
    endpoint            text        NOT NULL,
    provider            text        NOT NULL,
    requested_model     text        NOT NULL,
    served_model        text        NOT NULL,
    route               text,
    score               integer,
    attempt             integer     NOT NULL,
    status              integer     NOT NULL,
    input_tokens        bigint      NOT NULL,
    output_tokens       bigint      NOT NULL,
    cache_read_tokens   bigint      NOT NULL,
    cache_write_tokens  bigint      NOT NULL,
    cache_write_1h_tokens bigint    NOT NULL DEFAULT 0,
    cost_pusd           bigint,
    estimated           boolean     NOT NULL,
    cache_hit           boolean     GENERATED ALWAYS AS (cache_read_tokens > 0) STORED,
    cache_saved_pusd    bigint      NOT NULL DEFAULT 0,
    cache_wasted_pusd   bigint      NOT NULL DEFAULT 0,
    cache_bust          text,
    budgets             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (sidecar_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX usage_ts_namespace ON tokenwarden.usage (ts, namespace);
CREATE INDEX usage_budgets ON tokenwarden.usage USING gin (budgets jsonb_path_ops);

COMMENT ON TABLE tokenwarden.usage IS
    'One row per metered upstream attempt, exactly once by (sidecar_id, seq); written by the tokenwarden operator';
COMMENT ON COLUMN tokenwarden.usage.cost_pusd IS
    'Cost at the serving model''s price, in pico-USD (1e-12 USD); NULL when the model had no price';
