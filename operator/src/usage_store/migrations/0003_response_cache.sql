-- tokenwarden usage store, migration 3: the sidecar's response cache. A
-- record the cache answered has response_cache_hit (no provider call, cost
-- 0, no budget) and, in pico-USD, what the stored answer cost when the
-- provider made it: what the hit saved (docs/response-cache.md).
ALTER TABLE tokenwarden.usage
    ADD COLUMN response_cache_hit        boolean NOT NULL DEFAULT false,
    ADD COLUMN response_cache_saved_pusd bigint  NOT NULL DEFAULT 0;
