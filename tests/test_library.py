"""hog.Queue: the library the command line calls, on real queue files with real hogs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hog
from tests.helpers import REPO, child_env, cli, start_hog


@pytest.fixture
def queue(tmp_path: Path) -> hog.Queue:
    with hog.Queue(str(tmp_path / "queue.sqlite"), create=True) as opened:
        yield opened


def test_submit_read_wait_with_a_real_hog(queue: hog.Queue, tmp_path: Path) -> None:
    first = queue.submit("echo one > one.txt", cwd=str(tmp_path), name="first")
    argv = queue.submit(["sh", "-c", "exit 3"], retries=1)
    many = queue.submit_many(["true", "true"], cores=1, mem="10M", time="1m")
    array = queue.submit_array(["sh", "-c", "echo {index} > a{index}.txt"], range(1, 4), cwd=str(tmp_path))
    after = queue.submit("true", after=[first, *array])
    assert queue.states(after) == {after: "blocked"}
    hog_process = start_hog(queue.path, "--idle-timeout", "1s", "--heartbeat", "1s")
    try:
        ended = queue.wait([first, argv, *many, *array, after], timeout=120)
    finally:
        hog_process.wait(timeout=60)
    assert ended == {first: "done", argv: "failed", **dict.fromkeys([*many, *array, after], "done")}
    assert (tmp_path / "one.txt").read_text() == "one\n"
    assert [(tmp_path / f"a{i}.txt").read_text() for i in (1, 2, 3)] == ["1\n", "2\n", "3\n"]
    detail = queue.task(argv)
    assert (detail.exit_code, detail.argv, len(detail.attempts)) == (3, ["sh", "-c", "exit 3"], 2)
    assert [attempt.exit_code for attempt in queue.attempts(argv)] == [3, 3]
    assert queue.task(many[0]).mem_bytes == 10 << 20 and queue.task(many[0]).time_limit_s == 60.0
    assert [row.id for row in queue.tasks(name="first")] == [first]
    assert [row.id for row in queue.tasks(state="failed")] == [argv]
    assert queue.status().tasks["done"] == 7
    # What the library wrote, the command line reads.
    assert cli(queue.path, "check", str(argv), "--json").returncode == 0


def test_cancel_retry_hold_and_bundle(queue: hog.Queue) -> None:
    waiting = queue.submit("true")
    held = queue.submit_many(["true", "true"], bundle="later")
    assert set(queue.states(held).values()) == {"held"}
    outcome = queue.cancel([waiting, *held])
    assert sorted(outcome.cancelled) == [waiting, *held]
    assert queue.retry(waiting) == [waiting]
    assert queue.states(waiting) == {waiting: "waiting"}
    with pytest.raises(TimeoutError, match="1 of 1 tasks had not ended"):
        queue.wait(waiting, timeout=0.2, poll=0.05)


def test_bad_input_is_refused_as_on_the_command_line(queue: hog.Queue, tmp_path: Path) -> None:
    before = queue.status().tasks
    with pytest.raises(hog.UsageError, match=r"^cwd= nowhere: no such folder$"):
        queue.submit("true", cwd="nowhere")
    printed = cli(queue.path, "submit", "--cwd", "nowhere", "true").stderr.strip()
    assert printed == "slurm-hog: error: --cwd nowhere: no such folder"
    with pytest.raises(hog.UsageError, match=r"^cores= 0: give a whole number from 1 to 100000$"):
        queue.submit("true", cores=0)
    with pytest.raises(hog.UsageError, match=r"^bad time= '3x': use SLURM's"):
        queue.submit("true", time="3x")
    with pytest.raises(hog.UsageError, match=r"unknown placeholder \{job\}"):
        queue.submit("true", stdout="out/{job}.txt")
    with pytest.raises(hog.UsageError, match=r"^no task option 'colour': use cores, cwd, "):
        queue.submit("true", colour="red")
    with pytest.raises(hog.UsageError, match="the command is empty"):
        queue.submit("  ")
    with pytest.raises(hog.NotFoundError, match="no task 999"):
        queue.task(999)
    with pytest.raises(hog.UsageError, match="no task 998"):
        queue.submit("true", after=998)
    assert queue.status().tasks == before


def test_missing_queue_is_the_cli_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing.sqlite")
    with pytest.raises(hog.DatabaseError) as raised:
        hog.Queue(missing)
    assert cli(missing, "show").stderr.strip() == f"slurm-hog: error: {raised.value}"


def test_importing_hog_loads_no_wing() -> None:
    """The command line and a call's worker start without the library."""
    code = "import sys, hog; print(sorted(m for m in sys.modules if m.startswith('hog')))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['hog']"


def test_a_calls_worker_starts_light() -> None:
    """What each call's task starts: no site, and of the package only the worker until the call
    has run (the store and apsw come to keep its outcome)."""
    from hog.api.worker import worker_argv

    python, no_site, _, boot, *_ = worker_argv(sys.executable, "calls", 0, 0)
    code = boot.split("from hog")[0] + "import hog.api.worker; "
    code += (
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hog', 'apsw', 'click', 'cloudpickle')))"
    )
    shown = subprocess.run([python, no_site, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['hog', 'hog.api', 'hog.api.worker']"


def test_the_readme_example_runs(tmp_path: Path) -> None:
    """The example of README's Python section, as a user would paste it into a file and run it."""
    readme = (REPO / "README.rst").read_text()
    section = readme.split("\nPython\n======\n", 1)[1].split("\nCommand reference\n", 1)[0]
    example = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
    assert example, "no Python example in the README"
    script = tmp_path / "example.py"
    script.write_text("\n".join(line[4:] for line in example.group(1).splitlines()) + "\n")
    command = [sys.executable, str(script)]
    result = subprocess.run(
        command, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[0, 1, 4, 9, 16]", "hello from a hog", "task 7 ended done"]
    assert os.path.exists(tmp_path / "queue.sqlite")


def test_shared_gpus_and_kinds_as_on_the_command_line(queue: hog.Queue) -> None:
    from hog.gpushare import GPU_UNITS

    made = cli(queue.path, "kind", "set", "train", "--gpus", "0.5", "--time", "2h", "--cores", "2")
    assert made.returncode == 0, made.stderr
    from_kind = queue.task(queue.submit("true", kind="train"))
    assert (from_kind.cores, from_kind.gpus, from_kind.time_limit_s) == (2, GPU_UNITS // 2, 7200.0)
    given_wins = queue.task(queue.submit("true", kind="train", gpus="1/3", cores=1))
    assert (given_wins.cores, given_wins.gpus, given_wins.time_limit_s) == (1, GPU_UNITS // 3, 7200.0)
    assert queue.task(queue.submit("true", gpus=2)).gpus == 2 * GPU_UNITS
    assert queue.task(queue.submit("true", gpus=0.25)).gpus == GPU_UNITS // 4
    shown = cli(queue.path, "show", "--json")
    assert [row["gpus"] for row in json.loads(shown.stdout)] == [0.5, 1 / 3, 2, 0.25]
    with pytest.raises(hog.UsageError, match=r"^gpus= 0.3 does not pack onto GPUs"):
        queue.submit("true", gpus=0.3)
    with pytest.raises(hog.NotFoundError, match="no kind"):
        queue.submit("true", kind="nope")
    with hog.HogExecutor(queue.path, kind="train") as executor:  # no hog: the call waits
        future = executor.options(cores=3).submit(len, "abc")
        assert (queue.task(future.task_id).cores, queue.task(future.task_id).gpus) == (3, GPU_UNITS // 2)
        assert future.cancel()
