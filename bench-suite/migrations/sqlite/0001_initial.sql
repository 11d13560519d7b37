-- kernelsmith result store, SQLite flavour. The PostgreSQL file next door holds the same tables;
-- only the id column syntax and the float type differ. Times are Unix milliseconds (BIGINT),
-- JSON documents are TEXT, flags are 0/1 BIGINT: the portable subset both drivers agree on.

CREATE TABLE gpus (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    gpu_key            TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    compute_capability TEXT NOT NULL DEFAULT '',
    sm_count           BIGINT,
    memory_bytes       BIGINT,
    driver_version     TEXT NOT NULL DEFAULT '',
    details            TEXT NOT NULL DEFAULT '{}',
    created_at_ms      BIGINT NOT NULL
);

CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    category      TEXT NOT NULL,
    title         TEXT NOT NULL DEFAULT '',
    content_hash  TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    UNIQUE (name, content_hash)
);

CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    agent          TEXT NOT NULL,
    suite          TEXT NOT NULL DEFAULT '',
    config         TEXT NOT NULL DEFAULT '{}',
    git_rev        TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT
);

CREATE TABLE run_items (
    run_id              BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq                 BIGINT NOT NULL,
    item_key            TEXT NOT NULL,
    task_id             BIGINT REFERENCES tasks (id),
    payload             TEXT NOT NULL DEFAULT '{}',
    status              TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    claimed_by          TEXT,
    claim_expires_at_ms BIGINT,
    attempts            BIGINT NOT NULL DEFAULT 0,
    outcome             TEXT,
    finished_at_ms      BIGINT,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, item_key)
);
CREATE INDEX run_items_status ON run_items (run_id, status, seq);

CREATE TABLE llm_calls (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id       BIGINT REFERENCES tasks (id),
    role          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    tokens_in     BIGINT NOT NULL DEFAULT 0,
    tokens_out    BIGINT NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    latency_ms    REAL NOT NULL DEFAULT 0,
    request       TEXT NOT NULL DEFAULT '',
    response      TEXT NOT NULL DEFAULT '',
    error         TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX llm_calls_run_task ON llm_calls (run_id, task_id);

CREATE TABLE candidates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id       BIGINT NOT NULL REFERENCES tasks (id),
    origin        TEXT NOT NULL CHECK (origin IN ('reference', 'llm', 'human')),
    source        TEXT NOT NULL,
    plan          TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    generation    BIGINT NOT NULL DEFAULT 0,
    island        BIGINT NOT NULL DEFAULT 0,
    llm_call_id   BIGINT REFERENCES llm_calls (id),
    notes         TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    UNIQUE (run_id, task_id, content_hash)
);
CREATE INDEX candidates_run ON candidates (run_id, task_id);

CREATE TABLE candidate_parents (
    candidate_id BIGINT NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    parent_id    BIGINT NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    relation     TEXT NOT NULL DEFAULT '',
    position     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (candidate_id, parent_id)
);

CREATE TABLE evaluations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id      BIGINT NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    gpu_id            BIGINT REFERENCES gpus (id),
    cache_key         TEXT NOT NULL,
    protocol          TEXT NOT NULL,
    verdict           TEXT NOT NULL CHECK (verdict IN ('compile_error', 'invalid_plan', 'launch_error',
                          'runtime_fault', 'timeout', 'wrong_output', 'input_mutated',
                          'nondeterministic', 'correct')),
    details           TEXT NOT NULL DEFAULT '{}',
    compile_ms        REAL,
    timings           TEXT NOT NULL DEFAULT '[]',
    speedup_ref       REAL,
    speedup_eager     REAL,
    speedup_compile   REAL,
    sol_pct           REAL,
    quarantined       BIGINT NOT NULL DEFAULT 0,
    quarantine_reason TEXT,
    cached_from       BIGINT REFERENCES evaluations (id) ON DELETE SET NULL,
    created_at_ms     BIGINT NOT NULL,
    UNIQUE (candidate_id, cache_key)
);
CREATE INDEX evaluations_cache_key ON evaluations (cache_key);

CREATE TABLE profiles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    evaluation_id BIGINT NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,
    tool          TEXT NOT NULL,
    kernel        TEXT NOT NULL DEFAULT '',
    metrics       TEXT NOT NULL DEFAULT '{}',
    raw           TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL
);
