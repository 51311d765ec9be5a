-- tokenwarden usage store, migration 2: the reporting views. Days are UTC
-- days; money is summed in pico-USD (exact) and shown in USD as
-- numeric(38, 12): exact too, a pico-dollar is the 12th decimal.
CREATE VIEW tokenwarden.usage_usd AS
SELECT u.*,
       (u.cost_pusd::numeric / 1e12)::numeric(38, 12)          AS cost_usd,
       (u.cache_saved_pusd::numeric / 1e12)::numeric(38, 12)   AS cache_saved_usd,
       (u.cache_wasted_pusd::numeric / 1e12)::numeric(38, 12)  AS cache_wasted_usd,
       (u.ts AT TIME ZONE 'UTC')::date      AS day
FROM tokenwarden.usage u;

CREATE VIEW tokenwarden.daily_cost_by_namespace AS
SELECT day, namespace,
       count(*)                                   AS requests,
       sum(input_tokens)::bigint                  AS input_tokens,
       sum(output_tokens)::bigint                 AS output_tokens,
       sum(cache_read_tokens)::bigint             AS cache_read_tokens,
       sum(cache_write_tokens)::bigint            AS cache_write_tokens,
       coalesce(sum(cost_pusd), 0)::numeric       AS cost_pusd,
       (coalesce(sum(cost_pusd), 0)::numeric / 1e12)::numeric(38, 12) AS cost_usd,
       (sum(cache_saved_pusd)::numeric / 1e12)::numeric(38, 12)      AS cache_saved_usd,
       count(*) FILTER (WHERE cost_pusd IS NULL)  AS unpriced_requests,
       count(*) FILTER (WHERE estimated)          AS estimated_requests
FROM tokenwarden.usage_usd
GROUP BY day, namespace;

CREATE VIEW tokenwarden.daily_cost_by_workload AS
SELECT day, namespace, workload,
       count(*)                                   AS requests,
       sum(input_tokens)::bigint                  AS input_tokens,
       sum(output_tokens)::bigint                 AS output_tokens,
       sum(cache_read_tokens)::bigint             AS cache_read_tokens,
       sum(cache_write_tokens)::bigint            AS cache_write_tokens,
       coalesce(sum(cost_pusd), 0)::numeric       AS cost_pusd,
       (coalesce(sum(cost_pusd), 0)::numeric / 1e12)::numeric(38, 12) AS cost_usd,
       (sum(cache_saved_pusd)::numeric / 1e12)::numeric(38, 12)      AS cache_saved_usd,
       count(*) FILTER (WHERE cost_pusd IS NULL)  AS unpriced_requests,
       count(*) FILTER (WHERE estimated)          AS estimated_requests
FROM tokenwarden.usage_usd
GROUP BY day, namespace, workload;

CREATE VIEW tokenwarden.daily_cost_by_model AS
SELECT day, provider, served_model AS model,
       count(*)                                   AS requests,
       sum(input_tokens)::bigint                  AS input_tokens,
       sum(output_tokens)::bigint                 AS output_tokens,
       sum(cache_read_tokens)::bigint             AS cache_read_tokens,
       sum(cache_write_tokens)::bigint            AS cache_write_tokens,
       coalesce(sum(cost_pusd), 0)::numeric       AS cost_pusd,
       (coalesce(sum(cost_pusd), 0)::numeric / 1e12)::numeric(38, 12) AS cost_usd,
       (sum(cache_saved_pusd)::numeric / 1e12)::numeric(38, 12)      AS cache_saved_usd,
       count(*) FILTER (WHERE cost_pusd IS NULL)  AS unpriced_requests,
       count(*) FILTER (WHERE estimated)          AS estimated_requests
FROM tokenwarden.usage_usd
GROUP BY day, provider, served_model;

-- A record names every budget period it counted in (`budgets`, a JSON
-- array of {namespace, name, periodStart, key}); a record counted in two
-- budgets appears under each of them.
CREATE VIEW tokenwarden.cost_by_budget_period AS
SELECT b.value ->> 'namespace'                      AS budget_namespace,
       b.value ->> 'name'                           AS budget_name,
       (b.value ->> 'periodStart')::timestamptz     AS period_start,
       count(*)                                     AS requests,
       sum(u.input_tokens)::bigint                  AS input_tokens,
       sum(u.output_tokens)::bigint                 AS output_tokens,
       sum(u.cache_read_tokens)::bigint             AS cache_read_tokens,
       sum(u.cache_write_tokens)::bigint            AS cache_write_tokens,
       coalesce(sum(u.cost_pusd), 0)::numeric       AS cost_pusd,
       (coalesce(sum(u.cost_pusd), 0)::numeric / 1e12)::numeric(38, 12) AS cost_usd,
       count(*) FILTER (WHERE u.cost_pusd IS NULL)  AS unpriced_requests
FROM tokenwarden.usage u
CROSS JOIN LATERAL jsonb_array_elements(u.budgets) AS b(value)
GROUP BY 1, 2, 3;
