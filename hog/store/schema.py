"""The queue database's tables, as readable DDL, and its versioned migrations."""

from hog.store.states import (
    BLOCKED,
    HELD,
    HOG_STATES,
    RUNNING,
    SCHEMA_V1_TASK_STATES,
    TASK_STATES,
    WAITING,
)

_V1_STATES = SCHEMA_V1_TASK_STATES

# "Hog!" in ASCII: marks a file as ours before anything else is read from it.
APPLICATION_ID = 0x486F6721


def _quoted(state: str) -> str:
    return f"'{state}'"


def _in(states: tuple[str, ...]) -> str:
    return ", ".join(map(_quoted, states))


def _task_columns(task_states: tuple[str, ...]) -> str:
    """The tasks table's columns of schema 1, whose CHECK lists `task_states`."""
    return f"""    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    command TEXT NOT NULL CHECK (command <> ''),
    argv TEXT,  -- JSON list when run without a shell
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT {_quoted(WAITING)} CHECK (state IN ({_in(task_states)})),
    attempt INTEGER NOT NULL DEFAULT 0,  -- number of the current or latest attempt
    retries_used INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,  -- attempts whose hog was lost
    hog_id INTEGER REFERENCES hogs(id),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    signal INTEGER,
    ended_at REAL,
"""


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
{_task_columns(_V1_STATES)}    CHECK ((state = {_quoted(RUNNING)}) = (hog_id IS NOT NULL))
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
INSERT INTO state_counts(state, tasks) VALUES {", ".join(f"({_quoted(s)}, 0)" for s in _V1_STATES)};
"""

_TASK_COLUMNS_V1 = (
    "id, submission_id, command, argv, priority, state, attempt, retries_used, crashes, hog_id,"
    " cancel_requested, exit_code, signal, ended_at"
)

# Workflows: the states blocked and held, dependencies between tasks, array indexes and entries,
# bundles. The tasks table's CHECK lists its states, so it is rebuilt as sqlite's documentation
# says for changing a constraint (https://www.sqlite.org/lang_altertable.html#otheralter): make
# the new table, copy, drop the old, rename; foreign keys are off meanwhile (db._migrate), so
# dropping the old table deletes no attempts. Ids, the AUTOINCREMENT counter (which cleanup may
# have left above the largest id) and the indexes are kept.
SCHEMA_V2 = f"""
CREATE TABLE new_tasks (
{_task_columns(TASK_STATES)}    -- Parents whose end has not yet been settled: released to waiting at 0, so a
    -- release costs one decrement per child instead of a count over its parents.
    unmet INTEGER NOT NULL DEFAULT 0 CHECK (unmet >= 0),
    cancelled_by INTEGER,  -- the task whose end cancelled it (a retry of that one re-arms it)
    reason TEXT,  -- why it was cancelled without running ("parent 12 failed")
    array_index INTEGER,  -- submit --array: $HOG_ARRAY_INDEX and {{index}}
    entry TEXT,  -- submit --each-line: $HOG_ENTRY and {{entry}}
    CHECK ((state = {_quoted(RUNNING)}) = (hog_id IS NOT NULL)),
    CHECK (state <> {_quoted(BLOCKED)} OR unmet > 0)
);
INSERT INTO new_tasks({_TASK_COLUMNS_V1}) SELECT {_TASK_COLUMNS_V1} FROM tasks ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'new_tasks';
INSERT INTO sqlite_sequence(name, seq) SELECT 'new_tasks', seq FROM sqlite_sequence WHERE name = 'tasks';
DROP TABLE tasks;
ALTER TABLE new_tasks RENAME TO tasks;
CREATE INDEX tasks_queue ON tasks(state, priority DESC, id);
CREATE INDEX tasks_hog ON tasks(hog_id) WHERE hog_id IS NOT NULL;
CREATE INDEX tasks_ended ON tasks(ended_at) WHERE ended_at IS NOT NULL;
-- A name or a bundle stands for its tasks: found through their submissions.
CREATE INDEX tasks_submission ON tasks(submission_id);
CREATE INDEX tasks_cancelled_by ON tasks(cancelled_by) WHERE cancelled_by IS NOT NULL;

ALTER TABLE submissions ADD COLUMN bundle TEXT;
CREATE INDEX submissions_name ON submissions(name) WHERE name IS NOT NULL;
CREATE INDEX submissions_bundle ON submissions(bundle) WHERE bundle IS NOT NULL;

-- child runs after parent: 'ok' when the parent must end done, 'any' when it must only end.
-- settled: the parent's end has been applied to the child (its unmet count, or its cancel).
-- A parent always exists before its child, so a parent's id is below its child's.
CREATE TABLE dependencies (
    child INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    parent INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('ok', 'any')),
    settled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (child, parent),
    CHECK (parent < child)
) WITHOUT ROWID;
CREATE INDEX dependencies_parent ON dependencies(parent, settled);

INSERT INTO state_counts(state, tasks) VALUES ({_quoted(BLOCKED)}, 0), ({_quoted(HELD)}, 0);
"""

# Shared GPUs and kinds. A task's GPUs stay in `gpus` (how many devices it touches), so what
# counts devices reads on unchanged; a share of one device (--gpus 0.5) is 1 device and its k in
# `gpu_split` (1/k of it; hog.gpushare.MAX_SPLIT is the largest k). Kinds: named submit options,
# stored as {option: value as typed} in JSON, so options added to submit later need no migration.
SCHEMA_GPU_SHARES_KINDS = """
ALTER TABLE submissions ADD COLUMN gpu_split INTEGER
    CHECK (gpu_split IS NULL OR (gpu_split BETWEEN 2 AND 16 AND gpus = 1));
-- The kind a submit named (submit --kind), so that `tune --kind` finds its tasks.
ALTER TABLE submissions ADD COLUMN kind TEXT;
CREATE INDEX submissions_kind ON submissions(kind) WHERE kind IS NOT NULL;

CREATE TABLE kinds (
    name TEXT PRIMARY KEY CHECK (name <> ''),
    options TEXT NOT NULL,  -- JSON object: submit's option name -> its value as typed
    updated_at REAL NOT NULL,
    user TEXT
) WITHOUT ROWID;
"""
# Pools: each task names the pool of hogs it needs, each hog serves one. A task carries its
# submission's pool too, so that a hog's claim reads only its pool's waiting tasks, in claim order,
# through one small index (waiting tasks only) however many tasks of other pools wait.
SCHEMA_POOLS = f"""
ALTER TABLE submissions ADD COLUMN pool TEXT NOT NULL DEFAULT 'default' CHECK (pool <> '');
ALTER TABLE tasks ADD COLUMN pool TEXT NOT NULL DEFAULT 'default' CHECK (pool <> '');
ALTER TABLE hogs ADD COLUMN pool TEXT NOT NULL DEFAULT 'default' CHECK (pool <> '');
CREATE INDEX tasks_pool_waiting ON tasks(pool, priority DESC, id) WHERE state = {_quoted(WAITING)};
"""

# What a hog's cores did while they ran no task, in core-seconds by cause, and how long its
# database thread waited for the queue's lock: written with every heartbeat, read by `report`.
# launched_at is when the hog's process started (its allocation's cost begins about then).
SCHEMA_HOG_USAGE = """
ALTER TABLE hogs ADD COLUMN launched_at REAL;
ALTER TABLE hogs ADD COLUMN idle_startup_core_s REAL NOT NULL DEFAULT 0;
ALTER TABLE hogs ADD COLUMN idle_lock_core_s REAL NOT NULL DEFAULT 0;
ALTER TABLE hogs ADD COLUMN idle_empty_core_s REAL NOT NULL DEFAULT 0;
ALTER TABLE hogs ADD COLUMN idle_drain_core_s REAL NOT NULL DEFAULT 0;
ALTER TABLE hogs ADD COLUMN lock_wait_s REAL NOT NULL DEFAULT 0;
"""

# Steering hogs (`hogs stop`): a user's request that a hog drain or stop, and when the hog saw it
# (its answer; a hog that does not answer in time is signalled through its backend); and hog rows
# deleted by `cleanup --hogs`.
SCHEMA_HOG_STOPS = """
ALTER TABLE hogs ADD COLUMN stop_request TEXT
    CHECK (stop_request IS NULL OR stop_request IN ('drain', 'now'));
ALTER TABLE hogs ADD COLUMN stop_requested_at REAL;
ALTER TABLE hogs ADD COLUMN stop_seen_at REAL;
-- `cleanup --hogs` deletes old hog rows: their attempts are found without reading them all.
CREATE INDEX attempts_hog ON attempts(hog_id);
"""

# Python calls (hog.HogExecutor): what a call returned or raised, per attempt. A value too large
# for the database is in a file beside it (QueueFiles.calls), named by `path`.
SCHEMA_CALLS = """
CREATE TABLE call_results (
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    ok INTEGER NOT NULL CHECK (ok IN (0, 1)),  -- 1: the return value; 0: the exception raised
    value BLOB,
    path TEXT,
    CHECK ((value IS NULL) <> (path IS NULL)),
    PRIMARY KEY (task_id, attempt)
);
"""

# MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: list[str] = [
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_GPU_SHARES_KINDS,
    SCHEMA_HOG_USAGE,
    SCHEMA_HOG_STOPS,
    SCHEMA_POOLS,
    SCHEMA_CALLS,
]
SCHEMA_VERSION = len(MIGRATIONS)
