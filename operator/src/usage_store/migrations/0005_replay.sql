-- tokenwarden usage store, migration 5: what a what-if replay of a changed
-- RoutingPolicy needs about each attempt (docs/sidecar.md, "Replay facts";
-- counts and sizes only, never prompt text, never a credential). Every
-- column is NULL on rows written before this migration and on rows whose
-- sidecar did not send the facts (older sidecars, response-cache hits).
--   request_id       the app request: the seq of its first attempt (same
--                    sidecar_id); its retries and escalations share it
--   prompt_estimate  body bytes / 4, rounded up (what promptTokens matches)
--   tools_present    the request defined tools
--   features         the classifier's counts, camelCase JSON (NULL: the
--                    request was not scored)
--   tier             the tier of the choice that served the attempt
--   adjusted         what changed the model, in order (`escalated:refusal`,
--                    `downgraded`, `fallback`)
--   route_headers    [[name, value], ...] of the headers the policy's
--                    routes match on
ALTER TABLE tokenwarden.usage
    ADD COLUMN request_id      bigint,
    ADD COLUMN prompt_estimate bigint,
    ADD COLUMN tools_present   boolean,
    ADD COLUMN features        jsonb,
    ADD COLUMN tier            text,
    ADD COLUMN adjusted        text[],
    ADD COLUMN route_headers   jsonb;
