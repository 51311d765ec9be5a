-- tokenwarden usage store, migration 4: the semantic response cache. A hit
-- the semantic cache answered has response_cache_similarity (the cosine of
-- the two prompts, parts per 10,000; 0 for an exact hit); the cache's own
-- embedding calls have cache_embedding and, in pico-USD, what each cost, so
-- the net saving is response_cache_saved_pusd minus cache_embedding_cost_pusd
-- (docs/response-cache.md, "Semantic cache").
ALTER TABLE tokenwarden.usage
    ADD COLUMN response_cache_similarity integer NOT NULL DEFAULT 0,
    ADD COLUMN cache_embedding           boolean NOT NULL DEFAULT false,
    ADD COLUMN cache_embedding_cost_pusd bigint  NOT NULL DEFAULT 0;
