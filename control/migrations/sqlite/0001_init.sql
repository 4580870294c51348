-- iron-control schema (SQLite). Timestamps are epoch milliseconds; JSON is TEXT; sealed
-- values are AES-256-GCM blobs (see src/crypto.rs).

CREATE TABLE api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every namespaced resource: secrets of each kind, broker credentials, principals, roles.
CREATE TABLE resources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    foreign_id TEXT,
    labels TEXT NOT NULL,
    body TEXT NOT NULL,
    sealed BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (kind, namespace, foreign_id)
);
CREATE INDEX resources_kind_ns ON resources (kind, namespace, seq);

-- token_broker sources: which secret references which broker credential.
CREATE TABLE broker_refs (
    secret_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL REFERENCES resources (id),
    PRIMARY KEY (secret_id, credential_id)
);
CREATE INDEX broker_refs_credential ON broker_refs (credential_id);

CREATE TABLE broker_state (
    credential_id TEXT PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    refresh_sealed BLOB,
    access_sealed BLOB,
    expires_at INTEGER,
    last_refresh INTEGER,
    next_attempt_at INTEGER,
    dead INTEGER NOT NULL DEFAULT 0,
    dead_reason TEXT,
    failure_count INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    lease_owner TEXT
);
CREATE INDEX broker_state_due ON broker_state (next_attempt_at);

CREATE TABLE principal_roles (
    principal_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (principal_id, role_id)
);
CREATE INDEX principal_roles_role ON principal_roles (role_id);

CREATE TABLE grants (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    principal_id TEXT REFERENCES resources (id) ON DELETE CASCADE,
    role_id TEXT REFERENCES resources (id) ON DELETE CASCADE,
    secret_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    secret_kind TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX grants_principal ON grants (principal_id, priority, seq);
CREATE INDEX grants_role ON grants (role_id, priority, seq);
CREATE INDEX grants_secret ON grants (secret_id);

CREATE TABLE proxies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    principal_id TEXT REFERENCES resources (id) ON DELETE SET NULL,
    principal_assigned_at INTEGER,
    deleted_at INTEGER,
    tags TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX proxies_principal ON proxies (principal_id, seq);

CREATE TABLE enrollment_tokens (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    tags TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Tag-matched policies of the /v1/policies API: kind is network, secrets or mcp.
CREATE TABLE policies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    active INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    match_tags TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (kind, name)
);
CREATE INDEX policies_delivery ON policies (active, priority, seq);
CREATE INDEX policies_list ON policies (kind, priority, seq);
