"""The hog as a real process: placement, limits, signals, crashes, and what it leaves behind."""

import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import psutil
import pytest
from helpers import child_env, cli, cli_json, start_hog, states_of, wait_until

from hog.store import queue
from hog.store.db import open_database

# Short beats so that lost hogs are noticed within seconds (lease = 3 beats + 2 s).
FAST = ("--heartbeat", "1s", "--idle-timeout", "2s")


def submit(db: Path, *args: str, stdin: str | None = None, env: dict | None = None) -> list[int]:
    result = cli(db, "submit", "--json", *args, input=stdin, env=env)
    assert result.returncode == 0, result.stderr
    first_last = __import__("json").loads(result.stdout)
    return list(range(first_last["first"], first_last["last"] + 1))


def check(db: Path, task_id: int) -> dict:
    return cli_json(db, "check", str(task_id))[0]


def attempts(db: Path, task_id: int) -> list[queue.Attempt]:
    database = open_database(str(db))
    try:
        return queue.get_tasks(database, [task_id])[0].attempts
    finally:
        database.close()


def finish(process, timeout: float = 60) -> int:
    try:
        return process.wait(timeout=timeout)
    except Exception:
        process.kill()
        raise


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin tasks to")
def test_running_tasks_never_share_a_core_or_a_gpu(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = (
        'echo "$(date +%s.%N) $(grep Cpus_allowed_list /proc/self/status | cut -f2)'
        ' ${CUDA_VISIBLE_DEVICES} $HOG_CORES $OMP_NUM_THREADS"; sleep 0.3; date +%s.%N'
    )
    pattern = str(out / "{id}.txt")
    one_gpu = submit(db, "-g", "1", "-o", pattern, "--file", "-", stdin=input_lines(report, 6))
    two_gpus = submit(db, "-g", "2", "-o", pattern, "--file", "-", stdin=input_lines(report, 3))
    two_cores = submit(db, "-c", "2", "-o", pattern, "--file", "-", stdin=input_lines(report, 2))
    hog = start_hog(db, *FAST, "--cores", "2", "--gpus", "0,1,2,3")
    assert finish(hog) == 0
    runs = {}
    for task_id in one_gpu + two_gpus + two_cores:
        assert check(db, task_id)["state"] == "done"
        first, last = (out / f"{task_id}.txt").read_text().splitlines()
        start, cpus, *rest = first.split()
        gpus = rest[0] if len(rest) == 3 else ""
        runs[task_id] = (
            float(start),
            float(last),
            expand(cpus),
            set(filter(None, gpus.split(","))),
            rest[-2:],
        )
    for task_id in one_gpu:
        assert len(runs[task_id][3]) == 1 and len(runs[task_id][2]) == 1
    for task_id in two_gpus:
        assert len(runs[task_id][3]) == 2
    for task_id in two_cores:
        assert len(runs[task_id][2]) == 2 and runs[task_id][4] == ["2", "2"]
        assert runs[task_id][3] == set(), "a task without GPUs must see none"
    overlaps = 0
    for (a, run_a), (b, run_b) in combinations(runs.items(), 2):
        if run_a[0] < run_b[1] and run_b[0] < run_a[1]:
            overlaps += 1
            assert not run_a[2] & run_b[2], f"tasks {a} and {b} shared a core"
            assert not run_a[3] & run_b[3], f"tasks {a} and {b} shared a GPU"
    assert overlaps > 0, "no two tasks ran at once: the test proves nothing"


def input_lines(command: str, count: int) -> str:
    return "\n".join([command] * count) + "\n"


def expand(cpu_list: str) -> set[int]:
    cpus: set[int] = set()
    for part in cpu_list.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def test_task_past_its_time_limit_is_killed(db: Path) -> None:
    (task_id,) = submit(db, "-t", "1s", "sleep 30")
    started = time.monotonic()
    assert finish(start_hog(db, *FAST)) == 0
    result = check(db, task_id)
    assert result["state"] == "timeout"
    assert result["signal"] == signal.SIGTERM
    assert time.monotonic() - started < 25


def test_task_that_ignores_sigterm_gets_sigkill_and_the_hog_waits_asleep(db: Path, tmp_path: Path) -> None:
    (task_id,) = submit(db, "-t", "1s", "trap '' TERM; sleep 30")
    log = tmp_path / "hog.log"
    hog = start_hog(db, *FAST, log_path=log)
    wait_until(lambda: "passed its time limit" in log.read_text(), message="the time limit")
    # Five seconds from TERM to KILL: the hog must spend them asleep, not polling.
    process = psutil.Process(hog.pid)
    time.sleep(1.0)
    cpu_before, wall_before = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(2.5)
    cpu_used = sum(process.cpu_times()[:2]) - cpu_before
    wall = time.monotonic() - wall_before
    assert finish(hog) == 0
    result = check(db, task_id)
    assert result["state"] == "timeout"
    assert result["signal"] == signal.SIGKILL
    assert cpu_used < 0.25 * wall, f"the hog used {cpu_used:.2f} s of CPU in {wall:.2f} s"


def test_cancel_kills_a_running_task_within_seconds(db: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    (task_id,) = submit(db, f"echo $$ > {pid_file}; exec sleep 60")
    hog = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "30s")
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="task start")
        pid = int(pid_file.read_text())
        assert cli(db, "cancel", str(task_id)).returncode == 0
        wait_until(lambda: check(db, task_id)["state"] == "cancelled", timeout=15, message="cancelled")
        wait_until(lambda: not alive(pid), timeout=10, message="task process gone")
    finally:
        hog.send_signal(signal.SIGTERM)
        finish(hog)


def test_sigterm_gives_tasks_back_and_another_hog_runs_each_once(db: Path, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    ids = submit(db, "--file", "-", stdin=input_lines(f"sleep 3; echo $HOG_TASK_ID >> {done}", 2))
    first = start_hog(db, *FAST, "--cores", "2")
    wait_until(lambda: set(states_of(db).values()) == {"running"}, message="both tasks running")
    first.send_signal(signal.SIGTERM)
    assert finish(first, timeout=15) == 0
    for task_id in ids:
        assert check(db, task_id)["state"] == "waiting"
        assert attempts(db, task_id)[0].reason == "released"
    assert finish(start_hog(db, *FAST, "--cores", "2")) == 0
    assert sorted(int(line) for line in done.read_text().split()) == ids
    for task_id in ids:
        assert check(db, task_id)["state"] == "done"


def test_sigint_drains_and_a_second_sigint_stops(db: Path, tmp_path: Path) -> None:
    # The tasks run until the test lets them end, so a loaded machine cannot end them early.
    done, go, started = tmp_path / "done.txt", tmp_path / "go", tmp_path / "started.txt"
    wait_for_go = f"while [ ! -e {go} ]; do sleep 0.05; done"
    command = f"echo $HOG_TASK_ID >> {started}; {wait_for_go}; echo $HOG_TASK_ID >> {done}"
    ids = submit(db, "--file", "-", stdin=input_lines(command, 4))
    first_log = tmp_path / "first.log"
    hog = start_hog(db, *FAST, "--cores", "2", log_path=first_log)

    def running_now(count: int) -> bool:
        # Started, not only claimed: a drain gives back what a hog claimed and did not start.
        return started.exists() and len(started.read_text().split()) == count

    wait_until(lambda: running_now(2), message="two running")
    hog.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: draining" in first_log.read_text(), message="the drain")
    go.touch()
    # Bounds for a loaded machine: tasks that never end (the second hog's) keep a hog that does
    # not stop from ever finishing, however long the bound.
    assert finish(hog, timeout=60) == 0
    states = states_of(db)
    assert sorted(states[i] for i in ids) == ["done", "done", "waiting", "waiting"]
    assert len(done.read_text().split()) == 2

    go.unlink()
    log = tmp_path / "hog.log"
    hog = start_hog(db, *FAST, "--cores", "2", log_path=log)
    wait_until(lambda: running_now(4), message="two more running")
    hog.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: draining" in log.read_text(), message="the first SIGINT")
    hog.send_signal(signal.SIGINT)
    assert finish(hog, timeout=60) == 0
    assert sorted(states_of(db).values()).count("waiting") == 2
    assert len(done.read_text().split()) == 2


def submit_tiny(db: Path, command: str, count: int) -> list[int]:
    """`count` copies of a tiny task that keeps no output: claimed and queued ahead."""
    return submit(db, "-o", "/dev/null", "-e", "/dev/null", "--file", "-", stdin=input_lines(command, count))


def ran_once_the_rest_waiting(db: Path, ids: list[int], done: Path) -> list[int]:
    """The ids the tasks wrote to `done`: some but not all, each once, each done; the rest wait."""
    states = states_of(db)
    ran = [int(line) for line in done.read_text().split()]
    assert 0 < len(ran) == len(set(ran)) < len(ids)
    assert sorted(ran) == sorted(i for i in ids if states[i] == "done")
    assert all(states[i] == "waiting" for i in ids if i not in set(ran))
    return ran


def test_draining_among_short_tasks_gives_back_those_claimed_or_queued_ahead(
    db: Path, tmp_path: Path
) -> None:
    """Tiny tasks are claimed ahead and queued for the slots: a drain runs none of those."""
    done = tmp_path / "done.txt"
    ids = submit_tiny(db, f"echo $HOG_TASK_ID >> {done}", 3000)
    hog = start_hog(db, *FAST, "--cores", "2")
    wait_until(lambda: done.exists() and len(done.read_text().split()) >= 300, message="300 tasks done")
    hog.send_signal(signal.SIGINT)
    assert finish(hog, timeout=30) == 0
    ran_once_the_rest_waiting(db, ids, done)
    assert finish(start_hog(db, *FAST, "--cores", "2"), timeout=120) == 0
    assert sorted(int(line) for line in done.read_text().split()) == ids


@pytest.mark.parametrize("victims", ["the hog", "the hog and its slot processes"])
def test_killed_hog_is_healed_and_each_task_runs_once(db: Path, tmp_path: Path, victims: str) -> None:
    # Each task runs until it is killed or the test lets it end: a first attempt that outlived
    # its hog would write `done`.
    done, pids, go = tmp_path / "done.txt", tmp_path / "pids.txt", tmp_path / "go"
    command = f"echo $$ >> {pids}; while [ ! -e {go} ]; do sleep 0.1; done; echo $HOG_TASK_ID >> {done}"
    ids = submit(db, "--file", "-", stdin=input_lines(command, 2))
    victim = start_hog(db, *FAST, "--cores", "2")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, message="tasks started")
    orphans = [int(pid) for pid in pids.read_text().split()]
    if victims == "the hog":
        victim.kill()
        victim.wait()
        # Its slot processes see it gone and kill their tasks at once.
        wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=10, message="tasks killed")
    else:  # as the OOM killer or a kill -9 of the whole process group might
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        assert all(alive(pid) for pid in orphans), "tasks live on when nothing is left to kill them"
    healer_log = tmp_path / "healer.log"
    healer = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "30s", "--cores", "2", log_path=healer_log)
    # The healer declares the victim lost after its lease and kills what it left behind first.
    wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=30, message="orphans killed")
    go.touch()
    wait_until(lambda: all(check(db, task_id)["state"] == "done" for task_id in ids), timeout=60)
    healer.send_signal(signal.SIGINT)
    assert finish(healer, timeout=30) == 0
    assert sorted(int(line) for line in done.read_text().split()) == ids
    for task_id in ids:
        reasons = [attempt.reason for attempt in attempts(db, task_id)]
        assert reasons == ["lost", "exited"]
    hogs = cli_json(db, "show", "-H")
    assert [hog["state"] for hog in hogs] == ["lost", "finished"]


def test_lost_hog_that_comes_back_writes_nothing_over_the_new_attempt(db: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    (task_id,) = submit(db, f"sleep 6; echo $HOG_ATTEMPT >> {marks}")
    sleeper = start_hog(db, *FAST)
    wait_until(lambda: check(db, task_id)["state"] == "running", message="running")
    sleeper.send_signal(signal.SIGSTOP)
    try:
        healer = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "30s")
        wait_until(lambda: check(db, task_id)["state"] == "done", timeout=60, message="the new attempt")
        healer.send_signal(signal.SIGINT)
        assert finish(healer, timeout=30) == 0
    finally:
        sleeper.send_signal(signal.SIGCONT)
    # It finds itself declared lost: it kills what it runs, writes nothing, and exits 3.
    assert finish(sleeper, timeout=20) == 3
    assert check(db, task_id)["state"] == "done"
    first, second = attempts(db, task_id)
    assert first.reason == "lost" and first.exit_code is None
    assert second.reason == "exited" and second.exit_code == 0
    assert marks.read_text().split() == ["2"]


def test_walltime_drain_gives_back_unfinished_work(db: Path) -> None:
    (endless,) = submit(db, "sleep 60")
    (too_long,) = submit(db, "-t", "30s", "true")
    hog = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "30s", "--walltime", "9s", "--margin", "1s")
    assert finish(hog, timeout=30) == 0
    assert check(db, endless)["state"] == "waiting"
    assert [a.reason for a in attempts(db, endless)] == ["released"]
    assert check(db, too_long)["state"] == "waiting"
    assert attempts(db, too_long) == [], "a task longer than the time left must not start"
    (hog_row,) = cli_json(db, "show", "-H")
    assert hog_row["end_reason"] == "walltime"


def test_short_tasks_queued_for_the_slots_stop_starting_in_time(db: Path, tmp_path: Path) -> None:
    """Tasks queued ahead when the margin is reached are handed back unrun, not started late."""
    done = tmp_path / "done.txt"
    ids = submit_tiny(db, f"sleep 0.05 && echo $HOG_TASK_ID >> {done}", 2000)
    hog = start_hog(
        db,
        "--heartbeat",
        "1s",
        "--idle-timeout",
        "30s",
        "--walltime",
        "10s",
        "--margin",
        "6s",
        "--cores",
        "2",
    )
    assert finish(hog, timeout=60) == 0
    ran = ran_once_the_rest_waiting(db, ids, done)
    # None started with less than the margin left: neither those the loop still held nor those
    # already queued for a slot (the hog itself stops only 5 s before the end).
    (hog_row,) = cli_json(db, "show", "-H")
    last_start = max(a.started_at for i in ran[-20:] for a in attempts(db, i))
    assert last_start <= hog_row["end_by"] - 6 + 0.01


def test_failed_task_is_retried_until_it_succeeds(db: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    (task_id,) = submit(
        db,
        "--retries",
        "2",
        f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ $n -ge 2 ]",
    )
    assert finish(start_hog(db, *FAST)) == 0
    assert check(db, task_id)["state"] == "done"
    assert [a.exit_code for a in attempts(db, task_id)] == [1, 1, 0]


def test_background_processes_of_a_task_do_not_outlive_it(db: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    submit(db, f"sleep 100 & echo $! > {pid_file}")
    assert finish(start_hog(db, *FAST)) == 0
    pid = int(pid_file.read_text())
    wait_until(lambda: not alive(pid), timeout=10, message="background process killed")


def test_task_environment_and_output_files(db: Path, tmp_path: Path) -> None:
    script = 'echo "$HOG_TASK_ID $HOG_ATTEMPT $HOG_HOG_ID $MY_SETTING $SLURM_JOB_ID"; echo oops >&2'
    env = child_env(MY_SETTING="from-submit", SLURM_JOB_ID="424242")
    (task_id,) = submit(db, script, env=env)
    assert finish(start_hog(db, *FAST)) == 0
    out = cli(db, "log", str(task_id))
    # The submitting shell's variables reach the task; its SLURM placement does not.
    assert out.stdout.split() == [str(task_id), "1", "1", "from-submit"]
    assert cli(db, "log", str(task_id), "--stderr").stdout == "oops\n"


def test_big_task_is_not_starved_by_small_ones_behind_it(db: Path) -> None:
    (first_small,) = submit(db, "sleep 1")
    (big,) = submit(db, "-c", "2", "sleep 0.2")
    later_small = submit(db, "--file", "-", stdin=input_lines("sleep 0.2", 10))
    assert finish(start_hog(db, *FAST, "--cores", "2")) == 0
    big_start = attempts(db, big)[0].started_at
    assert attempts(db, first_small)[0].started_at < big_start
    # It reserves the cores: nothing submitted after it starts before it.
    assert all(attempts(db, task_id)[0].started_at > big_start for task_id in later_small)


def test_tasks_that_cannot_start_fail_with_the_reason(db: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    (bad_folder,) = submit(db, "--cwd", str(gone), "true")
    gone.rmdir()
    (bad_program,) = submit(db, "--", "no-such-program-here", "x")
    (fine,) = submit(db, "--", "printf", "%s", "ok")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (bad_output,) = submit(db, "-e", str(blocker / "{id}.err"), "true")
    assert finish(start_hog(db, *FAST)) == 0
    assert check(db, bad_output)["state"] == "failed"
    assert check(db, bad_output)["why"] == f"could not start: Not a directory: {blocker}/{bad_output}.err"
    assert check(db, bad_folder)["state"] == "failed" and "No such file" in check(db, bad_folder)["why"]
    assert (
        check(db, bad_program)["state"] == "failed"
        and "no-such-program-here" in check(db, bad_program)["why"]
    )
    assert check(db, fine)["state"] == "done"
    assert cli(db, "log", str(fine)).stdout == "ok"


def test_each_task_runs_in_its_own_folder_with_a_relative_db_path(db: Path, tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    ids = []
    for folder in folders:
        folder.mkdir()
        ids += submit(db, "--cwd", str(folder), "pwd; echo here > mark")
    hog = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", db.name, "hog", *FAST],
        cwd=db.parent,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert hog.wait(timeout=60) == 0
    for task_id, folder in zip(ids, folders, strict=True):
        assert (folder / "mark").read_text() == "here\n"
        assert cli(db, "log", str(task_id)).stdout.strip() == str(folder)
    assert not (folders[1] / db.name).exists(), "the hog lost track of its database"


def start_a_task_and_kill_it_from_outside(db: Path, tmp_path: Path) -> tuple[int, subprocess.Popen]:
    """A hog running one task whose process group got SIGTERM from someone else."""
    pid_file = tmp_path / "pid"
    (task_id,) = submit(db, f"echo $$ > {pid_file}; sleep 30")
    hog = start_hog(db, *FAST)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="task start")
    group = int(pid_file.read_text())
    os.killpg(group, signal.SIGTERM)
    wait_until(lambda: not group_alive(group), timeout=10, message="the task's end")
    return task_id, hog


def group_alive(group: int) -> bool:
    """Whether a process of the group still runs (an orphan's zombie waits for init: not alive)."""
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except ProcessLookupError:
            continue
    return False


def test_tasks_killed_just_before_their_hog_is_stopped_go_back(db: Path, tmp_path: Path) -> None:
    # scancel and SLURM's time limit signal every process of the job, often the tasks first.
    task_id, hog = start_a_task_and_kill_it_from_outside(db, tmp_path)
    hog.send_signal(signal.SIGTERM)
    assert finish(hog, timeout=20) == 0
    assert check(db, task_id)["state"] == "waiting"
    assert [a.reason for a in attempts(db, task_id)] == ["released"]


def test_a_shell_whose_child_was_killed_before_its_hog_stopped_goes_back(db: Path, tmp_path: Path) -> None:
    # SLURM signals the job's processes one by one: the shell may outlive its child and exit
    # 128+15 before the hog hears of the stop.
    pid_file = tmp_path / "pid"
    (task_id,) = submit(db, f"sleep 30 & echo $! > {pid_file}; wait $!")
    hog = start_hog(db, *FAST)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="task start")
    # The hog is paused while the child dies, so its stop signal reaches it within the
    # grace it gives such a death however loaded the machine is.
    hog.send_signal(signal.SIGSTOP)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    wait_until(lambda: not group_alive_of_task(db, task_id), message="the task's shell to exit")
    hog.send_signal(signal.SIGTERM)
    hog.send_signal(signal.SIGCONT)
    assert finish(hog, timeout=20) == 0
    assert check(db, task_id)["state"] == "waiting"


def group_alive_of_task(db: Path, task_id: int) -> bool:
    """Whether a process of the task still runs (found by its queue and HOG_TASK_ID: other tests'
    tasks run meanwhile, with the same ids in their own queues)."""
    for process in psutil.process_iter(["environ", "status"]):
        try:
            environ = process.info["environ"] or {}
        except psutil.Error:
            continue
        ours = environ.get("SLURM_HOG_DB") == str(db) and environ.get("HOG_TASK_ID") == str(task_id)
        if ours and process.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def test_a_task_killed_from_outside_while_the_hog_runs_on_fails(db: Path, tmp_path: Path) -> None:
    task_id, hog = start_a_task_and_kill_it_from_outside(db, tmp_path)
    assert finish(hog, timeout=30) == 0
    result = check(db, task_id)
    assert result["state"] == "failed" and result["signal"] == signal.SIGTERM


def test_plain_commands_run_without_a_shell_and_the_rest_with_one(db: Path, tmp_path: Path) -> None:
    # The script reports what started it: the hog itself, or a shell in between.
    script = tmp_path / "parent.sh"
    script.write_text('#!/bin/sh\ncat /proc/$PPID/comm > "$1"\n')
    script.chmod(0o755)
    no_shebang = tmp_path / "plain-script"
    no_shebang.write_text(f"echo ran > {tmp_path}/no-shebang.txt\n")
    no_shebang.chmod(0o755)
    direct, shelled, missing, bare = (
        submit(db, f"{script} {tmp_path}/direct.txt")[0],
        submit(db, f"{script} {tmp_path}/shelled.txt; true")[0],
        submit(db, "no-such-program-here --flag")[0],
        submit(db, str(no_shebang))[0],
    )
    assert finish(start_hog(db, *FAST)) == 0
    assert (tmp_path / "direct.txt").read_text().strip() != "sh"
    assert (tmp_path / "shelled.txt").read_text().strip() == "sh"
    assert check(db, direct)["state"] == check(db, shelled)["state"] == "done"
    # What cannot be run directly goes to the shell, which runs it or says why, as before.
    assert (tmp_path / "no-shebang.txt").read_text() == "ran\n"
    assert check(db, bare)["state"] == "done"
    failed = check(db, missing)
    assert failed["state"] == "failed" and failed["exit_code"] == 127
    assert "not found" in attempts(db, missing)[-1].stderr_tail


def test_direct_argv_keeps_to_plain_words() -> None:
    from hog.pilot.slot import direct_argv

    assert direct_argv("python3 run.py --n=3 a,b") == ["python3", "run.py", "--n=3", "a,b"]
    assert direct_argv("  ./sim\t7 ") == ["./sim", "7"]
    for needs_shell in (
        "true",
        "cd /tmp",
        "FOO=1 env",
        "echo $HOME",
        "ls *.txt",
        "a | b",
        "a; b",
        "x 'y'",
        "a > out",
        "ls ~",
        "a\nb",
        "a && b",
        "exec prog",
    ):
        assert direct_argv(needs_shell) is None, needs_shell


def test_default_logs_are_private_and_named_files_follow_the_umask(tmp_path: Path) -> None:
    import grp

    umask = os.umask(0)
    os.umask(umask)
    group = grp.getgrgid(os.getgid()).gr_name
    for init_options, private in (((), (0o700, 0o600)), (("--group", group), (0o770, 0o660))):
        folder = tmp_path / str(len(init_options))
        folder.mkdir()
        db = folder / "queue.sqlite"
        assert cli(db, "init", *init_options).returncode == 0
        (default,) = submit(db, "echo out; echo err >&2")
        (named,) = submit(db, "-o", str(folder / "named.out"), "echo named")
        assert finish(start_hog(db, *FAST)) == 0
        logs = Path(f"{db}.logs") / "tasks" / "000000"
        assert logs.stat().st_mode & 0o777 == private[0]
        for path in (logs / f"{default}.1.out", logs / f"{default}.1.err", logs / f"{named}.1.err"):
            # The queue's own modes whatever the umask, so every member of a group can write.
            assert path.stat().st_mode & 0o777 == private[1], path
        assert (folder / "named.out").stat().st_mode & 0o777 == 0o666 & ~umask
        assert cli(db, "log", str(default), "--stderr").stdout == "err\n"
        assert (folder / "named.out").read_text() == "named\n"


def test_tasks_given_back_unstarted_leave_no_output_files(db: Path, tmp_path: Path) -> None:
    """Only tasks that started have output files, however many were claimed or queued ahead."""
    done = tmp_path / "done.txt"
    ids = submit(db, "--file", "-", stdin=input_lines(f"echo $HOG_TASK_ID >> {done}", 1000))
    hog = start_hog(db, *FAST, "--cores", "2")
    wait_until(lambda: done.exists() and len(done.read_text().split()) >= 100, message="100 tasks done")
    hog.send_signal(signal.SIGINT)
    assert finish(hog, timeout=30) == 0
    ran = ran_once_the_rest_waiting(db, ids, done)
    logs = Path(f"{db}.logs") / "tasks"
    assert sorted(path.name for path in logs.glob("*/*.out")) == sorted(f"{i}.1.out" for i in ran)
    assert len(list(logs.glob("*/*.err"))) == len(ran)


def test_output_files_are_made_ahead_without_holding_them_open(tmp_path: Path) -> None:
    from hog.pilot.procs import OutputFiles

    outputs = OutputFiles(0o700)
    try:
        (tmp_path / "old.out").write_text("left from an earlier attempt")
        before = len(os.listdir("/proc/self/fd"))
        keys = [(n, 1) for n in range(300)]
        for task_id, attempt in keys:
            paths = (str(tmp_path / "logs" / f"{task_id}.out"), str(tmp_path / "logs" / f"{task_id}.err"))
            outputs.request((task_id, attempt), paths, (0o600, 0o600))
        outputs.request((999, 1), (str(tmp_path / "old.out"), os.devnull), (0o600, 0o600))
        for key in [*keys, (999, 1)]:
            outputs.wait(key)
        # Hundreds of tasks claimed ahead must not cost hundreds of fds (the limit is often 1024).
        assert len(os.listdir("/proc/self/fd")) <= before + 2
        assert len(os.listdir(tmp_path / "logs")) == 600
        # An existing file is the child's to truncate as it starts, not before.
        assert (tmp_path / "old.out").read_text() == "left from an earlier attempt"
        unstarted = (str(tmp_path / "logs" / "u.out"), str(tmp_path / "logs" / "u.err"))
        outputs.request((1000, 1), unstarted, (0o600, 0o600))
        outputs.discard((1000, 1))
        assert not any(os.path.exists(path) for path in unstarted)
        # A task handed back unstarted leaves an earlier attempt's file as it was.
        outputs.discard((999, 1))
        assert (tmp_path / "old.out").read_text() == "left from an earlier attempt"
    finally:
        outputs.close()


def test_a_rerun_truncates_its_named_output_as_it_starts(db: Path, tmp_path: Path) -> None:
    """A named -o file of an earlier attempt is replaced by the next attempt's output as it
    starts (made ahead, an existing file is left alone until then)."""
    out = tmp_path / "result.txt"
    command = 'if [ "$HOG_ATTEMPT" = 1 ]; then echo a long first attempt; exit 1; fi; echo two'
    (task_id,) = submit(db, "-o", str(out), "--retries", "1", command)
    assert finish(start_hog(db, *FAST)) == 0
    assert check(db, task_id)["state"] == "done"
    assert out.read_text() == "two\n"


def test_a_hog_claims_its_first_tasks_in_the_write_that_registers_it(db: Path) -> None:
    # One write instead of two in the lock's line for each hog that starts: its first claim
    # carries the registration's time, to the microsecond.
    submit(db, "--array", "1-5", "--", "true")
    assert finish(start_hog(db, "--cores", "2", "--idle-timeout", "1s")) == 0
    database = open_database(str(db))
    try:
        ((started_at,),) = database.query("SELECT started_at FROM hogs")
        claimed = database.query(
            "SELECT task_id FROM attempts WHERE claimed_at = ? ORDER BY task_id", (started_at,)
        )
        states = database.query("SELECT state, count(*) FROM tasks GROUP BY state")
        tries = database.query("SELECT count(*) FROM attempts")
    finally:
        database.close()
    assert [row[0] for row in claimed] == [1, 2], "the first node-full, claimed as the hog registered"
    assert states == [("done", 5)] and tries == [(5,)]


# A hog run in a process of its own whose start-up is broken or interrupted at one step, after it
# registered and claimed: the script names the step.
_SETUP_SCRIPT = """
import os, signal, sys
from hog.pilot import runner
from hog.pilot.options import HogOptions

real = runner.OutputFiles
def interrupted(*args, **kwargs):
    if sys.argv[2] == "fail":
        raise OSError(24, "Too many open files")
    os.kill(os.getpid(), signal.SIGTERM)  # as scancel would, while the hog sets up
    return real(*args, **kwargs)
runner.OutputFiles = interrupted
sys.exit(runner.run_hog(sys.argv[1], 10.0, HogOptions(cores=2, idle_timeout_s=1.0)))
"""


@pytest.mark.parametrize("step", ["fail", "sigterm"])
def test_what_a_hog_claimed_as_it_registered_goes_back_if_its_setup_fails_or_is_stopped(
    db: Path, step: str
) -> None:
    submit(db, "--array", "1-4", "--", "true")
    env = {key: value for key, value in child_env().items() if not key.startswith("SLURM_")}
    result = subprocess.run(
        [sys.executable, "-c", _SETUP_SCRIPT, str(db), step],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode != 0) == (step == "fail"), result.stderr
    database = open_database(str(db))
    try:
        tasks = database.query("SELECT state, count(*) FROM tasks GROUP BY state")
        tries = database.query("SELECT task_id, reason FROM attempts ORDER BY task_id")
    finally:
        database.close()
    assert tasks == [("waiting", 4)], "nothing ran, nothing stays claimed"
    assert tries == [(1, "released"), (2, "released")], "the first node-full went back at once"
