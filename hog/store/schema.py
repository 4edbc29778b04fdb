"""The queue database's tables, as readable DDL, and its versioned migrations."""

from hog.store.states import HOG_STATES, RUNNING, TASK_STATES, WAITING

# "Hog!" in ASCII: marks a file as ours before anything else is read from it.
APPLICATION_ID = 0x486F6721


def _quoted(state: str) -> str:
    return f"'{state}'"


def _in(states: tuple[str, ...]) -> str:
    return ", ".join(map(_quoted, states))


SCHEMA_V1 = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;

-- One row per distinct environment: a million tasks from one shell share one row.
CREATE TABLE environments (
    id INTEGER PRIMARY KEY,
    variables TEXT NOT NULL UNIQUE
);

-- What one `submit` call asked for; its tasks share it.
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    submitted_at REAL NOT NULL,
    user TEXT,
    host TEXT,
    cwd TEXT NOT NULL,
    environment_id INTEGER NOT NULL REFERENCES environments(id),
    name TEXT,
    cores INTEGER NOT NULL CHECK (cores >= 1),
    gpus INTEGER NOT NULL CHECK (gpus >= 0),
    mem_bytes INTEGER CHECK (mem_bytes IS NULL OR mem_bytes > 0),
    time_limit_s REAL CHECK (time_limit_s IS NULL OR time_limit_s > 0),
    max_retries INTEGER NOT NULL CHECK (max_retries >= 0),
    stdout_pattern TEXT,
    stderr_pattern TEXT
);

-- AUTOINCREMENT: ids are never reused after cleanup, so logs and scripts stay unambiguous.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    command TEXT NOT NULL CHECK (command <> ''),
    argv TEXT,  -- JSON list when run without a shell
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT {_quoted(WAITING)} CHECK (state IN ({_in(TASK_STATES)})),
    attempt INTEGER NOT NULL DEFAULT 0,  -- number of the current or latest attempt
    retries_used INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,  -- attempts whose hog was lost
    hog_id INTEGER REFERENCES hogs(id),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    signal INTEGER,
    ended_at REAL,
    CHECK ((state = {_quoted(RUNNING)}) = (hog_id IS NOT NULL))
);
CREATE INDEX tasks_queue ON tasks(state, priority DESC, id);
CREATE INDEX tasks_hog ON tasks(hog_id) WHERE hog_id IS NOT NULL;
CREATE INDEX tasks_ended ON tasks(ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE attempts (
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    hog_id INTEGER REFERENCES hogs(id),
    host TEXT,
    claimed_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    cores TEXT,
    gpus TEXT,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    max_rss_kib INTEGER,
    cpu_user_s REAL,
    cpu_system_s REAL,
    stderr_tail TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

CREATE TABLE hogs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ({_in(HOG_STATES)})),
    backend TEXT NOT NULL,  -- manual, prefix, sbatch
    backend_id TEXT,  -- SLURM job id, or pid@start-time of the prefix process
    monitor_host TEXT,
    host TEXT,
    pid INTEGER,
    slurm_job_id TEXT,
    cores INTEGER,
    gpus TEXT,
    mem_bytes INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    heartbeat_at REAL,
    ended_at REAL,
    end_by REAL,  -- when its allocation ends, if known
    lease_s REAL NOT NULL,
    tasks_run INTEGER NOT NULL DEFAULT 0,
    log_path TEXT,
    end_reason TEXT
);
CREATE INDEX hogs_state ON hogs(state);

-- Kept in step by every write in queue.py, so `status` costs the same on any queue size.
CREATE TABLE state_counts (
    state TEXT PRIMARY KEY,
    tasks INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO state_counts(state, tasks) VALUES {", ".join(f"({_quoted(s)}, 0)" for s in TASK_STATES)};
"""

# MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: list[str] = [SCHEMA_V1]
SCHEMA_VERSION = len(MIGRATIONS)
