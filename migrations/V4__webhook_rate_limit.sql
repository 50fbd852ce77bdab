-- A webhook's optional delivery rate limit (deliveries per second, across the whole worker
-- fleet); NULL means none.
ALTER TABLE webhooks ADD COLUMN rate_limit integer
    CHECK (rate_limit IS NULL OR rate_limit BETWEEN 1 AND 10000);
