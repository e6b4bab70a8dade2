-- One row per node, rewritten by the health check: a write that proves the database
-- takes writes (see src/health.rs).
CREATE TABLE health_probes (
    node TEXT PRIMARY KEY NOT NULL,
    checked_at TIMESTAMP NOT NULL
);
