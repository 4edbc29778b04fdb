"""`status --watch` in a real terminal (tmux: keys sent, the screen read back) and piped."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, cli, start_hog, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and os.environ.get("CI") != "true",
    reason="no tmux (scripts/test.sh installs it)",
)


class Terminal:
    """A tmux server of its own with one 100x30 window running `command`."""

    def __init__(self, tmp_path: Path, command: str) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.exit_file = tmp_path / "exit-status"
        shell = f"{command}; echo $? > {shlex.quote(str(self.exit_file))}; sleep 600"
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", shell)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def exit_status(self) -> int:
        wait_until(self.exit_file.exists, timeout=30, message="the view to quit")
        time.sleep(0.1)  # the line is written as the file appears
        return int(self.exit_file.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def watched(db: Path, tmp_path: Path):
    """The live view of `db` in a terminal, redrawn every second, and a hog running its tasks."""
    for _ in range(3):
        assert cli(db, "submit", "sleep 20").returncode == 0
    hog = start_hog(db, "--cores", "2", "--heartbeat", "1s", "--walltime", "1h")
    command = (
        f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m hog --db {shlex.quote(str(db))}"
    )
    terminal = Terminal(tmp_path, f"{command} status --watch --interval 1s")
    yield terminal
    terminal.close()
    hog.kill()
    hog.wait(timeout=30)


def test_the_live_view_draws_counts_rate_and_each_hogs_load_then_quits_on_q(watched: Terminal) -> None:
    screen = wait_until(
        lambda: (lambda text: "2/2 cores" in text and text)(watched.screen()),
        timeout=60,
        message="the hog's load on the screen",
    )
    assert "tasks: 1 waiting, 2 running" in screen
    assert "rate: " in screen and "3 tasks to go" in screen
    hog_line = next(line for line in screen.splitlines() if line.startswith("1 "))
    assert "running" in hog_line and ("59m" in hog_line or "1h00m" in hog_line), hog_line  # time left
    watched.tmux("send-keys", "q")
    assert watched.exit_status() == 0
    assert watched.tmux("display-message", "-p", "#{alternate_on}").strip() == "0", "the terminal is restored"
    assert "tasks:" not in watched.screen()


def test_the_live_view_quits_on_ctrl_c_and_restores_the_terminal(watched: Terminal) -> None:
    wait_until(lambda: "tasks:" in watched.screen(), timeout=60)
    watched.tmux("send-keys", "C-c")
    assert watched.exit_status() == 130
    assert watched.tmux("display-message", "-p", "#{alternate_on}").strip() == "0"


def test_piped_it_prints_a_line_per_interval_until_no_task_is_left(db: Path) -> None:
    for _ in range(2):
        assert cli(db, "submit", "sleep 2").returncode == 0
    watch = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "status", "--watch", "--interval", "1s"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert watch.stdout is not None
    first = watch.stdout.readline()  # before any hog, so that both tasks still wait
    hog = start_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "1s")
    out, _ = watch.communicate(timeout=120)
    assert watch.returncode == 0
    lines = [first.rstrip("\n"), *out.splitlines()]
    assert len(lines) >= 3
    assert lines[0].split()[1:4] == ["tasks:", "2", "waiting,"]
    assert any("1/1 cores busy" in line for line in lines)
    assert "the queue is empty" in lines[-1] and "2 done" in lines[-1]
    assert hog.wait(timeout=60) == 0


def test_watch_refuses_a_format_and_a_bad_interval(db: Path) -> None:
    for args, words in [
        (("--json",), "--watch draws on the terminal"),
        (("--format", "csv"), "--watch draws on the terminal"),
        (("--interval", "0"), "bad --interval '0'"),
    ]:
        result = cli(db, "status", "--watch", *args)
        assert result.returncode == 2 and words in result.stderr, result.stderr
