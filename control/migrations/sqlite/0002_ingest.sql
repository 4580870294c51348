-- Audit ingest: the SHA-256 of each proxy's ingest token (handed out by sync, derived from the
-- proxy token), looked up by the OTLP logs receiver.
ALTER TABLE proxies ADD COLUMN ingest_token_hash TEXT;
CREATE UNIQUE INDEX proxies_ingest_token ON proxies (ingest_token_hash);
