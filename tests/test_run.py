"""`slurm-hog run` as a user types it: output while the task runs, its exit status, Ctrl-C."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env, cli, task_counts, tasks, wait_until


@pytest.mark.usefixtures("hog")
def test_run_streams_stdout_and_stderr_apart_and_exits_with_the_status(db: Path) -> None:
    result = cli(db, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    result = cli(db, "run", "echo 'a shell string' $((6 * 7))")
    assert (result.returncode, result.stdout) == (0, "a shell string 42\n")


@pytest.mark.usefixtures("hog")
def test_run_shows_output_while_the_task_runs(db: Path, tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hog",
            "--db",
            str(db),
            "run",
            f"echo first; while [ ! -e {go_on} ]; do sleep 0.1; done; echo second",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert client.stdout is not None
    assert client.stdout.readline() == "first\n"  # while the task still waits for go-on
    assert client.poll() is None
    go_on.touch()
    assert client.stdout.read() == "second\n"
    assert client.wait(timeout=30) == 0


@pytest.mark.usefixtures("hog")
def test_run_of_a_task_killed_by_a_signal_exits_128_plus_its_number(db: Path) -> None:
    assert cli(db, "run", "kill -TERM $$").returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.usefixtures("hog")
def test_ctrl_c_or_sigterm_cancels_the_task_and_waits_until_it_is_gone(
    db: Path, tmp_path: Path, number: int
) -> None:
    pid_file = tmp_path / "pid"
    client = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "run", f"echo $$ > {pid_file}; exec sleep 60"],
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="the task started")
    pid = int(pid_file.read_text())
    client.send_signal(number)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == -number  # died of the signal, as a shell's child
    assert f"task 1 cancelled ({signal.Signals(number).name})" in stderr
    assert [task["state"] for task in tasks(db)] == ["cancelled"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.usefixtures("hog")
def test_run_follows_retries_to_the_last_attempt(db: Path, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    command = f"if [ -e {marker} ]; then echo second try; else touch {marker}; echo first try; exit 1; fi"
    result = cli(db, "run", "--retries", "1", command)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first try\nsecond try\n"
    assert "task 1 runs again (attempt 2)" in result.stderr


@pytest.mark.usefixtures("hog")
def test_run_with_its_own_output_file_streams_that_file(db: Path, tmp_path: Path) -> None:
    result = cli(db, "run", "-o", "out-{id}.txt", "--cwd", str(tmp_path), "echo kept")
    assert (result.returncode, result.stdout) == (0, "kept\n")
    assert (tmp_path / "out-1.txt").read_text() == "kept\n"


@pytest.mark.usefixtures("hog")
def test_a_program_that_cannot_start_exits_127_saying_why(db: Path) -> None:
    result = cli(db, "run", "--", "/no/such/program", "x")
    assert result.returncode == 127
    assert "could not start" in result.stderr and "/no/such/program" in result.stderr


def test_bad_input_is_a_usage_error_that_submits_nothing(db: Path) -> None:
    for args in (("run",), ("run", "--cores", "0", "true"), ("run", "--max-wait", "soon", "true")):
        result = cli(db, *args)
        assert result.returncode == 2, args
        assert "rror: " in result.stderr and "Traceback" not in result.stderr
    assert task_counts(db)["waiting"] == 0


def test_run_with_no_hog_and_no_monitor_gives_up_after_max_wait(db: Path) -> None:
    result = cli(db, "run", "--max-wait", "2s", "true")
    assert result.returncode == 3
    assert "no hog runs and no monitor serves" in result.stderr
    assert "gave up after 2.0s (--max-wait)" in result.stderr
    assert [task["state"] for task in tasks(db)] == ["cancelled"]


@pytest.mark.usefixtures("hog")
def test_run_takes_a_kind_and_its_own_options_win(db: Path) -> None:
    assert cli(db, "kind", "set", "pair", "--cores", "2", "--name", "paired").returncode == 0
    result = cli(db, "run", "--kind", "pair", "echo $HOG_CORES")
    assert (result.returncode, result.stdout) == (0, "2\n"), result.stderr
    result = cli(db, "run", "--kind", "pair", "--cores", "1", "echo $HOG_CORES")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr
    assert [task["name"] for task in tasks(db)] == ["paired", "paired"]
