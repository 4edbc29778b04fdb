#!/usr/bin/env python3
"""Soak test: many short tasks through a monitor and its hogs while hogs are killed -9 at random.

    .venv/bin/python scripts/soak.py [--tasks 20000] [--hogs 8] [--slots 2] [--kill-every 3]
                                     [--submitters 4] [--db PATH] [--json OUT] [--seed N]

A fresh queue (in a temporary folder unless --db) gets a monitor (`monitor --command-prefix nohup`)
and, at the same time:
  - `--submitters` processes that submit `sleep 0.0NN` tasks (0 to 50 ms) through the real CLI, as
    single submits and small `--file -` batches, until `--tasks` exist, and now and then cancel a
    few (mostly recent, so mostly waiting) ones;
  - a loop that every `--kill-every` seconds (give or take half) kills -9 a random running hog
    found with `show -H --json`.
When everything is submitted and nothing waits or runs, the killer stops, the hogs leave on their
own (idle timeout), the monitor gets SIGTERM, and the queue is checked: every task done or
cancelled, each done task with exactly one successful attempt (its last one), no cancelled task
with a successful one, every attempt closed, `state_counts` true, `PRAGMA integrity_check` ok,
every hog ended, no process left behind, no traceback in any log. Exit status 1 if a check fails.

The test suite runs a short version (tests/test_soak.py) through `run()`.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SINGLE_SUBMIT_CHANCE = 0.3  # the other submits are `--file -` batches
BATCH_MAX = 40
CANCEL_CHANCE = 0.3  # after a submit, cancel a few tasks
CANCEL_MAX = 3
CANCEL_RECENT_WINDOW = 100  # most cancels pick among the submitter's latest tasks (mostly waiting)
CANCEL_ANY_CHANCE = 0.2  # the others among all its tasks (running or ended: kill and skip paths)
TASK_MAX_MS = 50
CLI_TIMEOUT_S = 600
POLL_S = 0.5
PROGRESS_EVERY_S = 10.0
SETTLE_TIMEOUT_S = 120.0  # for hogs to leave and the monitor to stop once the queue is empty
MAX_EXAMPLES = 10
OK_HOG_END_STATES = ("finished", "lost")


# -- helpers ---------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SLURM_HOG_DB", None)
    return env


def hog_cli(
    db: str, *args: str, input: str | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """`slurm-hog --db DB ARGS` as a real process with this interpreter; never raises on exit status."""
    return subprocess.run(
        [sys.executable, "-m", "hog", "--db", db, *args],
        input=input,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=CLI_TIMEOUT_S,
    )


def log(message: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def share(total: int, parts: int, index: int) -> int:
    """The `index`-th of `parts` near-equal shares of `total`."""
    return total // parts + (1 if index < total % parts else 0)


# -- a submitter (its own process) -----------------------------------------------------------


def submitter_main(db: str, count: int, seed: int, cwd: str) -> dict:
    """Submit `count` tasks through the CLI and cancel a few on the way; return what it did."""
    rng = random.Random(seed)
    ids: list[int] = []
    stats: Counter = Counter()
    errors: list[str] = []
    remaining = count
    while remaining > 0 and len(errors) < 20:
        number = 1 if remaining == 1 or rng.random() < SINGLE_SUBMIT_CHANCE else rng.randint(2, BATCH_MAX)
        number = min(number, remaining)
        commands = [f"sleep 0.{rng.randint(0, TASK_MAX_MS):03d}" for _ in range(number)]
        if number == 1:
            result = hog_cli(db, "submit", "--json", commands[0], cwd=cwd)
        else:
            result = hog_cli(db, "submit", "--json", "--file", "-", input="\n".join(commands) + "\n", cwd=cwd)
        stats["submit_calls"] += 1
        if result.returncode != 0:
            errors.append(f"submit exited {result.returncode}: {result.stderr.strip()[-2000:]}")
            continue
        answer = json.loads(result.stdout)
        if answer["count"] != number:
            errors.append(f"submitted {number} tasks, the CLI says {answer}")
        ids.extend(range(answer["first"], answer["last"] + 1))
        stats["batches" if number > 1 else "singles"] += 1
        stats["tasks"] += answer["count"]
        remaining -= number
        if rng.random() < CANCEL_CHANCE:
            pool = ids if rng.random() < CANCEL_ANY_CHANCE else ids[-CANCEL_RECENT_WINDOW:]
            chosen = rng.sample(pool, min(len(pool), rng.randint(1, CANCEL_MAX)))
            result = hog_cli(db, "cancel", *map(str, chosen), cwd=cwd)
            stats["cancel_calls"] += 1
            stats["cancel_ids"] += len(chosen)
            if result.returncode != 0:
                errors.append(f"cancel exited {result.returncode}: {result.stderr.strip()[-2000:]}")
                continue
            said = re.search(r"cancelled (\d+) waiting, (\d+) running", result.stdout)
            if said:
                stats["cancelled_waiting"] += int(said.group(1))
                stats["cancel_running"] += int(said.group(2))
    return {**stats, "errors": errors}


# -- the soak --------------------------------------------------------------------------------


class Soak:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.seed = options.seed if options.seed is not None else random.randrange(1 << 30)
        if options.db:
            self.db = os.path.abspath(options.db)
            self.workdir = os.path.dirname(self.db)
            self.own_workdir = False
            os.makedirs(self.workdir, exist_ok=True)
        else:
            self.workdir = tempfile.mkdtemp(prefix="hog-soak-")
            self.db = os.path.join(self.workdir, "queue.sqlite")
            self.own_workdir = True
        self.monitor_log = self.db + ".soak-monitor.log"
        self.monitor: subprocess.Popen | None = None
        self.submitters: list[subprocess.Popen] = []
        self.submitter_reports: list[dict] = []
        self.stop_killing = threading.Event()
        self.killer: threading.Thread | None = None
        self.kills: list[dict] = []
        self.kill_misses = 0  # no running hog at that moment, or it left before the signal
        self.killer_errors: list[str] = []
        self.hog_pids: dict[int, int] = {}  # hog id -> pid, as seen by the killer or the database
        self.checks: list[dict] = []
        self.figures: dict = {}
        self.submitted_s: float | None = None  # when the last submitter finished, from the start

    # -- running -----------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        deadline = started + self.options.max_seconds
        drained_at = None
        try:
            init = hog_cli(self.db, "init")
            if init.returncode != 0:
                raise SystemExit(f"soak: init failed: {init.stderr.strip()}")
            self._start_monitor()
            self._start_submitters()
            self.killer = threading.Thread(target=self._kill_loop, name="killer", daemon=True)
            self.killer.start()
            drained_at = self._wait_for_empty_queue(started, deadline)
            self.stop_killing.set()
            self.killer.join(timeout=CLI_TIMEOUT_S)
            settled = drained_at is not None and self._settle(
                min(deadline, time.monotonic() + SETTLE_TIMEOUT_S)
            )
            self._check("finished in time", drained_at is not None, f"limit {self.options.max_seconds:.0f} s")
            self._check("hogs left and the monitor stopped", settled, "" if settled else "see the log above")
            wall_s = (drained_at or time.monotonic()) - started
            self.verify(wall_s)
        finally:
            self.stop_killing.set()
            self._clean_up()
        ok = all(check["ok"] for check in self.checks)
        summary = {
            "ok": ok,
            "db": self.db,
            "seed": self.seed,
            "options": {
                key: getattr(self.options, key)
                for key in ("tasks", "hogs", "slots", "kill_every", "submitters")
            },
            "figures": self.figures,
            "checks": self.checks,
            "kills": self.kills,
        }
        if ok and self.own_workdir and not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            summary["db"] = None
        return summary

    def _start_monitor(self) -> None:
        options = self.options
        argv = [
            sys.executable,
            "-m",
            "hog",
            "-v",
            "--db",
            self.db,
            "monitor",
            "--command-prefix",
            "nohup",
            "--hogs",
            str(options.hogs),
            "--cores",
            str(options.slots),
            "--poll",
            "0.5s",
            "--heartbeat",
            "1s",
            "--idle-timeout",
            "3s",
        ]
        with open(self.monitor_log, "wb") as output:
            self.monitor = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=child_env(),
                cwd=self.workdir,
                start_new_session=True,
            )
        log(f"queue {self.db}, monitor pid {self.monitor.pid}, seed {self.seed}")

    def _start_submitters(self) -> None:
        count = self.options.submitters
        for index in range(count):
            argv = [
                sys.executable,
                os.path.abspath(__file__),
                "--submitter",
                "--db",
                self.db,
                "--tasks",
                str(share(self.options.tasks, count, index)),
                "--seed",
                str(self.seed + 1 + index),
            ]
            stderr = open(f"{self.db}.soak-submitter-{index}.err", "wb")  # noqa: SIM115 - closed below
            with stderr:
                self.submitters.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        env=child_env(),
                        cwd=self.workdir,
                        start_new_session=True,
                    )
                )

    def _wait_for_empty_queue(self, started: float, deadline: float) -> float | None:
        """Poll until every submitter is done and nothing waits or runs; the time, or None at the deadline."""
        from hog.store import queue
        from hog.store.db import open_database

        db = open_database(self.db)
        try:
            last_progress = 0.0
            while time.monotonic() < deadline:
                for process in self.submitters:
                    if process.returncode is None and process.poll() is not None:
                        output = process.stdout.read() if process.stdout else b""
                        try:
                            self.submitter_reports.append(json.loads(output))
                        except ValueError:
                            self.submitter_reports.append(
                                {
                                    "errors": [
                                        f"submitter {process.pid} exited {process.returncode}: {output!r}"
                                    ]
                                }
                            )
                if self.monitor is not None and self.monitor.poll() is not None:
                    log(f"the monitor exited early with status {self.monitor.returncode}")
                    return None
                status = queue.status(db)
                submitting = any(process.returncode is None for process in self.submitters)
                now = time.monotonic()
                if not submitting and self.submitted_s is None:
                    self.submitted_s = now - started
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    counts = " ".join(f"{state} {number}" for state, number in status.tasks.items() if number)
                    live = status.hogs.get("pending", 0) + status.hogs.get("running", 0)
                    counts = counts or "no tasks"
                    log(f"{now - started:5.0f} s: {counts}; {live} hogs live, {len(self.kills)} kills")
                if not submitting and status.active == 0:
                    return now
                time.sleep(POLL_S)
            log("deadline passed before the queue emptied")
            return None
        finally:
            db.close()

    def _kill_loop(self) -> None:
        rng = random.Random(self.seed)
        while not self.stop_killing.wait(self.options.kill_every * rng.uniform(0.5, 1.5)):
            result = hog_cli(self.db, "show", "-H", "-s", "running", "--json")
            if result.returncode != 0:
                self.killer_errors.append(
                    f"show -H exited {result.returncode}: {result.stderr.strip()[-2000:]}"
                )
                continue
            hogs = [hog for hog in json.loads(result.stdout) if hog["state"] == "running" and hog["pid"]]
            for hog in hogs:
                self.hog_pids[hog["id"]] = hog["pid"]
            if self.stop_killing.is_set():
                return
            if not hogs:
                self.kill_misses += 1
                continue
            victim = rng.choice(hogs)
            if not self._is_hog_process(victim["pid"]):
                self.kill_misses += 1
                continue
            try:
                os.kill(victim["pid"], signal.SIGKILL)
            except ProcessLookupError:
                self.kill_misses += 1
                continue
            self.kills.append({"hog": victim["id"], "pid": victim["pid"], "at": time.time()})

    def _is_hog_process(self, pid: int) -> bool:
        """Is `pid` still a process of this queue (not a recycled pid)?"""
        try:
            process = psutil.Process(pid)
            return process.status() != psutil.STATUS_ZOMBIE and self.db in process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def _settle(self, deadline: float) -> bool:
        """Wait for every hog row to end, then stop the monitor and wait for every hog process to go."""
        from hog.store.db import open_database

        db = open_database(self.db)
        try:
            while db.query("SELECT id FROM hogs WHERE state IN ('pending', 'running')"):
                if time.monotonic() > deadline:
                    log("hogs still live at the deadline: " + str(self._live_hogs(db)))
                    return False
                time.sleep(POLL_S)
            for hog_id, pid in db.query("SELECT id, pid FROM hogs WHERE pid IS NOT NULL"):
                self.hog_pids[hog_id] = pid
        finally:
            db.close()
        assert self.monitor is not None
        self.monitor.send_signal(signal.SIGTERM)
        try:
            status = self.monitor.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log("the monitor did not stop on SIGTERM")
            return False
        self._check("the monitor exited 0 on SIGTERM", status == 0, f"status {status}")
        while any(self._is_hog_process(pid) for pid in self.hog_pids.values()):
            if time.monotonic() > deadline:
                log("hog processes still alive at the deadline")
                return False
            time.sleep(0.1)
        return True

    @staticmethod
    def _live_hogs(db) -> list[tuple]:
        return db.query("SELECT id, state, pid, heartbeat_at FROM hogs WHERE state IN ('pending', 'running')")

    # -- checking ----------------------------------------------------------------------------

    def _check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})

    def verify(self, wall_s: float) -> None:
        """Check the queue's final state (and the processes and logs); fills `checks` and `figures`."""
        from hog.store import queue
        from hog.store.db import open_database

        db = open_database(self.db)
        try:
            task_states = {row[0]: row[1] for row in queue.iter_tasks(db)}
            details = queue.get_tasks(db, sorted(task_states))
            counted = dict(db.query("SELECT state, tasks FROM state_counts WHERE tasks != 0"))
            grouped = dict(db.query("SELECT state, count(*) FROM tasks GROUP BY state"))
            integrity = [row[0] for row in db.query("PRAGMA integrity_check")]
            foreign = db.query("PRAGMA foreign_key_check")
            hog_states = Counter(state for (state,) in db.query("SELECT state FROM hogs"))
            hog_rows = db.query("SELECT id, pid FROM hogs WHERE pid IS NOT NULL")
        finally:
            db.close()
        for hog_id, pid in hog_rows:
            self.hog_pids[hog_id] = pid

        states = Counter(task_states.values())
        self._check(
            "every task submitted",
            len(task_states) == self.options.tasks,
            f"{len(task_states)} tasks, {self.options.tasks} asked",
        )
        others = [task_id for task_id, state in task_states.items() if state not in ("done", "cancelled")]
        self._check(
            "every task done or cancelled",
            not others,
            f"states {dict(states)}; e.g. {others[:MAX_EXAMPLES]}" if others else "",
        )

        bad_done, bad_cancelled, open_attempts, gaps = [], [], [], []
        reasons: Counter = Counter()
        for task in details:
            successes = [
                attempt
                for attempt in task.attempts
                if attempt.reason == "exited" and attempt.exit_code == 0 and attempt.signal is None
            ]
            for attempt in task.attempts:
                reasons[attempt.reason] += 1
                if attempt.ended_at is None or attempt.reason is None:
                    open_attempts.append((task.id, attempt.attempt))
            if [attempt.attempt for attempt in task.attempts] != list(range(1, task.attempt + 1)):
                gaps.append(task.id)
            if task.state == "done" and (
                len(successes) != 1 or successes[0].attempt != task.attempt or task.exit_code != 0
            ):
                bad_done.append(task.id)
            if task.state == "cancelled" and successes:
                bad_cancelled.append(task.id)
        self._check(
            "each done task has exactly one successful attempt, its last",
            not bad_done,
            f"{len(bad_done)} wrong, e.g. {bad_done[:MAX_EXAMPLES]}" if bad_done else "",
        )
        self._check(
            "no cancelled task has a successful attempt",
            not bad_cancelled,
            f"{len(bad_cancelled)} wrong, e.g. {bad_cancelled[:MAX_EXAMPLES]}" if bad_cancelled else "",
        )
        self._check(
            "every attempt ended with a reason",
            not open_attempts,
            f"{len(open_attempts)} open, e.g. {open_attempts[:MAX_EXAMPLES]}" if open_attempts else "",
        )
        self._check(
            "attempts numbered 1..n without gaps",
            not gaps,
            f"{len(gaps)} tasks, e.g. {gaps[:MAX_EXAMPLES]}" if gaps else "",
        )
        self._check("state_counts equals the tasks table", counted == grouped, f"{counted} vs {grouped}")
        self._check("PRAGMA integrity_check ok", integrity == ["ok"], "; ".join(integrity[:MAX_EXAMPLES]))
        self._check("PRAGMA foreign_key_check empty", not foreign, str(foreign[:MAX_EXAMPLES]))
        live = {state: number for state, number in hog_states.items() if state not in OK_HOG_END_STATES}
        self._check("every hog finished or lost", not live, str(dict(hog_states)))
        self._check_processes()
        self._check_logs()

        reports = self.submitter_reports
        cli_errors = [error for report in reports for error in report.get("errors", [])] + self.killer_errors
        self._check(
            "every CLI call succeeded",
            not cli_errors and len(reports) == self.options.submitters,
            "; ".join(cli_errors[:3]) or f"{len(reports)} of {self.options.submitters} submitters reported",
        )

        done = states.get("done", 0)
        self.figures = {
            "tasks": len(task_states),
            "done": done,
            "cancelled": states.get("cancelled", 0),
            "other_states": {state: n for state, n in states.items() if state not in ("done", "cancelled")},
            "hogs_started": sum(hog_states.values()),
            "hogs": dict(hog_states),
            "kills": len(self.kills),
            "kill_misses": self.kill_misses,
            "requeues_lost": reasons.get("lost", 0),
            "attempt_reasons": dict(reasons),
            "max_attempts": max((task.attempt for task in details), default=0),
            "submit_calls": sum(report.get("submit_calls", 0) for report in reports),
            "cancel_calls": sum(report.get("cancel_calls", 0) for report in reports),
            "cancel_ids_asked": sum(report.get("cancel_ids", 0) for report in reports),
            "cancel_running_asked": sum(report.get("cancel_running", 0) for report in reports),
            "submitting_s": None if self.submitted_s is None else round(self.submitted_s, 1),
            "wall_s": round(wall_s, 1),
            "throughput_per_s": round(done / wall_s, 1) if wall_s > 0 else None,
        }

    def _check_processes(self) -> None:
        """Nothing of this queue may be left: no process naming the database, no task process."""
        left = []
        me = os.getpid()
        for process in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
            info = process.info
            if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = info["cmdline"] or []
            environ = info["environ"] or {}
            if self.db in cmdline or environ.get("SLURM_HOG_DB") == self.db:
                left.append(f"{info['pid']} {' '.join(cmdline)[:200]}")
        self._check("no process left behind", not left, "; ".join(left[:MAX_EXAMPLES]))
        alive = [pid for pid in self.hog_pids.values() if self._is_hog_process(pid)]
        self._check(
            "every hog process is gone",
            not alive and bool(self.hog_pids),
            f"alive: {alive[:MAX_EXAMPLES]}" if alive else f"{len(self.hog_pids)} hog pids checked",
        )

    def _check_logs(self) -> None:
        paths = [self.monitor_log, *sorted(Path(self.db + ".logs", "hogs").glob("hog-*.log"))]
        paths += sorted(Path(self.workdir).glob(Path(self.db).name + ".soak-submitter-*.err"))
        found = []
        for path in paths:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                continue
            if "Traceback" in text:
                found.append(str(path))
        self._check("no traceback in any log", not found, ", ".join(found[:MAX_EXAMPLES]))

    # -- cleaning up -------------------------------------------------------------------------

    def _clean_up(self) -> None:
        """Whatever is still running (after a failure) is stopped; the checks were made before."""
        for process in self.submitters:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()
        if self.monitor is not None and self.monitor.poll() is None:
            self.monitor.send_signal(signal.SIGTERM)
            try:
                self.monitor.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.monitor.kill()
                self.monitor.wait()
        if self.killer is not None:
            self.killer.join(timeout=CLI_TIMEOUT_S)
        for pid in self.hog_pids.values():
            if self._is_hog_process(pid):
                os.kill(pid, signal.SIGTERM)


# -- entry points ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="tasks to submit in all")
    parser.add_argument("--hogs", type=int, default=8, help="most hogs at once")
    parser.add_argument("--slots", type=int, default=2, help="cores (task slots) per hog")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills, on average")
    parser.add_argument("--submitters", type=int, default=4, help="submitting processes")
    parser.add_argument("--db", help="queue database to create (default: in a new temporary folder)")
    parser.add_argument("--json", dest="json_path", help="write the summary here as JSON")
    parser.add_argument("--seed", type=int, help="random seed (default: a random one, printed)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="give up after this long")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder even when all is well")
    parser.add_argument("--submitter", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.tasks < 1 or options.hogs < 1 or options.slots < 1 or options.submitters < 1:
        parser.error("--tasks, --hogs, --slots and --submitters must be at least 1")
    if options.kill_every <= 0:
        parser.error("--kill-every must be positive")
    if options.db and not options.submitter and os.path.exists(options.db):
        parser.error(f"--db {options.db} exists: the soak needs a fresh queue")
    return options


def format_summary(summary: dict) -> str:
    figures = summary["figures"]
    lines = []
    if figures:
        lines.append(
            f"tasks {figures['tasks']}: done {figures['done']}, cancelled {figures['cancelled']}"
            + (f", other {figures['other_states']}" if figures["other_states"] else "")
        )
        lines.append(
            f"hogs started {figures['hogs_started']} {figures['hogs']}, kills {figures['kills']}"
            f" (misses {figures['kill_misses']}), requeues (lost attempts) {figures['requeues_lost']},"
            f" max attempts {figures['max_attempts']}"
        )
        lines.append(f"attempt reasons {figures['attempt_reasons']}")
        lines.append(
            f"submit calls {figures['submit_calls']}, cancel calls {figures['cancel_calls']}"
            f" ({figures['cancel_ids_asked']} ids, {figures['cancel_running_asked']} running)"
        )
        lines.append(
            f"wall {figures['wall_s']} s (the last submit after {figures['submitting_s']} s),"
            f" {figures['throughput_per_s']} tasks/s done"
        )
    for check in summary["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(f"{mark} {check['name']}" + (f": {check['detail']}" if check["detail"] else ""))
    lines.append(("PASS" if summary["ok"] else "FAIL") + f" (seed {summary['seed']})")
    if summary["db"]:
        lines.append(f"queue kept at {summary['db']}")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict:
    """Run the soak with command-line style arguments; the summary (see --json)."""
    return Soak(parse_args(argv)).run()


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.submitter:
        cwd = os.path.dirname(os.path.abspath(options.db))
        print(json.dumps(submitter_main(os.path.abspath(options.db), options.tasks, options.seed, cwd)))
        return 0
    summary = Soak(options).run()
    print(format_summary(summary))
    if options.json_path:
        with open(options.json_path, "w") as output:
            json.dump(summary, output, indent=2)
            output.write("\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
