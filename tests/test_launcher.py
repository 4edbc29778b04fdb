"""The slot processes that start tasks and wait for them, with real processes (launcher.py, slot.py)."""

import contextlib
import os
import time
from pathlib import Path

import psutil
import pytest
from helpers import holds_for, wait_until

from hog.pilot.launcher import Crashed, Ended, Launch, Launcher, NotStarted, Started
from hog.pilot.procs import OutputFiles
from hog.pilot.slot import close_all, open_fresh

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin slots to")


class Slots:
    """A launcher on the first two CPUs, collecting its events."""

    def __init__(self, tmp_path: Path, unpinned: int = 0) -> None:
        self.tmp_path = tmp_path
        self.cpus = sorted(os.sched_getaffinity(0))[:2]
        if unpinned:
            self.cpus = list(range(unpinned))  # slot numbers, as a hog without affinity uses
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.outputs = OutputFiles(0o700)
        self.pids = tmp_path / "pids"
        self.pids_fd = os.open(self.pids, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        labels = [str(cpu) for cpu in self.cpus]
        cpu_ids = None if unpinned else self.cpus
        self.launcher = Launcher(cpu_ids, labels, self.outputs, self.pids_fd, self.wake_write)
        self.seen: list = []
        self.launches: dict[int, Launch] = {}

    def launch(
        self,
        number: int,
        command: object,
        cores: int = 1,
        latest_start: float | None = None,
        paths: tuple[str, str] | None = None,
        per_attempt: bool = False,
    ) -> Launch:
        """`per_attempt`: its files are its attempt's alone (as the queue's logs), made by its slot."""
        key = (number, 1)
        if paths is None:
            paths = (str(self.tmp_path / f"{number}.out"), str(self.tmp_path / f"{number}.err"))
        self.outputs.request(key, paths, (0o600, 0o600), (per_attempt, per_attempt))
        launch = Launch(key, command, str(self.tmp_path), dict(os.environ), paths, cores, latest_start)  # type: ignore[arg-type]
        self.launches[number] = launch
        return launch

    def events(self, kind: type, count: int) -> list:
        def enough() -> bool:
            self.seen.extend(self.launcher.events())
            return sum(type(event) is kind for event in self.seen) >= count

        wait_until(enough, timeout=30, message=f"{count} {kind.__name__} events")
        return [event for event in self.seen if type(event) is kind]

    def output(self, number: int) -> str:
        return (self.tmp_path / f"{number}.out").read_text()

    def close(self) -> None:
        self.launcher.close()
        self.outputs.close()
        for fd in (self.wake_read, self.wake_write, self.pids_fd):
            os.close(fd)


@pytest.fixture
def slots(tmp_path: Path):
    launcher = Slots(tmp_path)
    yield launcher
    launcher.close()


def test_queued_tasks_start_on_the_slot_that_frees_first_pinned_to_it(slots: Slots) -> None:
    report = "grep Cpus_allowed_list /proc/self/status | cut -f2; echo $HOG_CPUS"
    slots.launcher.queue(slots.launch(1, f"{report}; sleep 1"))
    slots.launcher.queue(slots.launch(2, report))
    slots.launcher.queue(slots.launch(3, report))
    ended = slots.events(Ended, 3)
    assert [event.key[0] for event in ended][-1] == 1, "the short ones must not wait for the long one"
    assert len(slots.events(Started, 3)) == 3
    started = slots.launches
    for number in (1, 2, 3):
        allowed, label = slots.output(number).split()
        (slot,) = started[number].slots
        assert allowed == label == str(slots.cpus[slot])
    assert started[2].slots == started[3].slots != started[1].slots
    assert all(event.exited.exit_code == 0 for event in ended)
    assert sorted(event.exited.pid for event in ended) == sorted(launch.pid for launch in started.values())
    recorded = slots.pids.read_text().split()
    assert sorted(recorded) == sorted(str(launch.pid) for launch in started.values())


def test_a_slot_opens_the_files_of_the_task_next_in_line_while_the_one_before_runs(slots: Slots) -> None:
    go = slots.tmp_path / "go"
    wait_for_go = f"while [ ! -e {go} ]; do sleep 0.02; done"
    for number in (1, 2):  # both slots busy until `go`
        slots.launcher.queue(slots.launch(number, wait_for_go, per_attempt=True))
    slots.events(Started, 2)
    slots.launcher.queue(slots.launch(3, "echo three; echo oops >&2", per_attempt=True))
    slots.launcher.queue(slots.launch(4, "echo four", per_attempt=True))
    slots.launcher.queue(slots.launch(5, "echo five"))  # a file a user named: opened as it starts
    ahead = {str(slots.tmp_path / name) for name in ("3.out", "3.err", "4.out", "4.err")}

    def opened_by_slots() -> set[str]:
        found = set()
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                found |= {handle.path for handle in child.open_files()}
        return found

    wait_until(lambda: ahead <= opened_by_slots(), message="the next tasks' files open in their slots")
    assert not slots.events(Started, 2)[2:], "they waited for `go`"
    assert not {path for path in opened_by_slots() if "/5." in path}, "not next in line, nor its own"
    go.touch()
    slots.events(Ended, 5)
    assert [slots.output(number) for number in (3, 4, 5)] == ["three\n", "four\n", "five\n"]
    assert (slots.tmp_path / "3.err").read_text() == "oops\n"
    wait_until(lambda: not {path for path in opened_by_slots() if path.endswith((".out", ".err"))})


def test_a_late_open_of_a_fresh_file_keeps_what_the_task_wrote(tmp_path: Path) -> None:
    # The commands thread may open a task's files just after the main thread started it.
    out, err = tmp_path / "1.out", tmp_path / "1.err"
    out.write_text("written already\n")
    fds = open_fresh((str(out), str(err)), (True, True))
    assert fds[0] is not None and fds[1] is None, "a file that is not there is left to the start"
    close_all(fds)
    assert out.read_text() == "written already\n"
    both = open_fresh((str(out), str(out)), (True, True))
    assert both[1] is None, "one file for both streams is opened once"
    close_all(both)


def test_a_task_sent_ahead_to_a_slot_can_be_taken_back_before_it_starts(slots: Slots) -> None:
    for number in (1, 2):
        slots.launcher.queue(slots.launch(number, "sleep 2"))
    slots.events(Started, 2)
    marker = slots.tmp_path / "ran"
    slots.launcher.queue(slots.launch(3, f"touch {marker}"))
    assert slots.launcher.queued == 1
    assert not slots.launcher.withdraw((3, 1)), "sent to a slot: its answer comes as an event"
    (event,) = slots.events(NotStarted, 1)
    assert event == NotStarted((3, 1), None)
    assert slots.launcher.queued == 0
    slots.events(Ended, 2)
    assert holds_for(lambda: not marker.exists(), seconds=0.3), "a withdrawn task started"
    assert [event for event in slots.seen if event.key[0] == 3] == [NotStarted((3, 1), None)]


def test_a_long_task_does_not_hold_up_the_one_sent_ahead_behind_it(slots: Slots) -> None:
    slots.launcher.queue(slots.launch(1, "sleep 3"))
    for number in (2, 3, 4):  # one-core tasks go to both slots evenly: one waits behind the sleep
        slots.launcher.queue(slots.launch(number, "true"))
    ended = slots.events(Ended, 4)
    assert [event.key[0] for event in ended][-1] == 1, "a task waited for the long one to end"
    assert {slots.launches[number].slots for number in (2, 3, 4)} == {slots.launches[2].slots}


def test_a_task_of_two_cores_waits_for_two_idle_slots(slots: Slots) -> None:
    slots.launcher.queue(slots.launch(1, "sleep 1"))
    slots.events(Started, 1)
    two = slots.launch(2, "grep Cpus_allowed_list /proc/self/status | cut -f2; echo $HOG_CPUS", cores=2)
    assert not slots.launcher.start_on_idle(two), "one slot is busy"
    slots.events(Ended, 1)
    assert slots.launcher.start_on_idle(two)
    (ended,) = [event for event in slots.events(Ended, 2) if event.key[0] == 2]
    assert ended.exited.exit_code == 0
    allowed, label = slots.output(2).split()
    both = ",".join(str(cpu) for cpu in slots.cpus)
    assert label == both
    assert allowed in (both, f"{slots.cpus[0]}-{slots.cpus[1]}")
    # Its second slot was lent to it and is free again: one-core tasks run on both.
    for number in (3, 4):
        slots.launcher.queue(slots.launch(number, "sleep 0.5"))
    slots.events(Started, 4)
    assert {slots.launches[3].slots, slots.launches[4].slots} == {(0,), (1,)}


def test_a_task_past_its_latest_start_is_not_started(slots: Slots) -> None:
    marker = slots.tmp_path / "ran"
    slots.launcher.queue(slots.launch(1, f"touch {marker}", latest_start=time.time() - 1))
    (event,) = slots.events(NotStarted, 1)
    assert event.key == (1, 1) and event.error is None
    assert not marker.exists()


def test_a_task_that_cannot_start_says_why(slots: Slots) -> None:
    launch = slots.launch(1, ["/nonexistent/program"])
    slots.launcher.queue(launch)
    (event,) = slots.events(NotStarted, 1)
    assert isinstance(event.error, FileNotFoundError)
    # The slot is free for the next one.
    slots.launcher.queue(slots.launch(2, "true"))
    assert slots.events(Ended, 1)[0].key == (2, 1)


def test_a_bug_in_a_slot_process_reaches_the_loop(slots: Slots) -> None:
    slots.launcher.queue(slots.launch(1, 12345))  # neither an argv nor a command: a TypeError
    (event,) = slots.events(Crashed, 1)
    assert "TypeError" in str(event.error)


def test_a_slot_process_that_dies_is_reported(slots: Slots) -> None:
    slot_processes = [
        child for child in psutil.Process().children() if "hog.pilot.slot" in " ".join(child.cmdline())
    ]
    assert len(slot_processes) == 2
    slot_processes[0].kill()
    slot_processes[0].wait(timeout=10)
    for number in (1, 2, 3):  # sent to the dead slot too, before its end is read: no BrokenPipeError
        slots.launcher.queue(slots.launch(number, "sleep 5"))
    slots.launcher.withdraw_all()
    (event,) = slots.events(Crashed, 1)
    assert f"pid {slot_processes[0].pid}" in str(event.error)


def test_a_slot_whose_hog_is_gone_kills_its_task_and_exits(slots: Slots) -> None:
    slots.launcher.queue(slots.launch(1, "sleep 60"))
    slots.events(Started, 1)
    task = psutil.Process(slots.launches[1].pid)
    slot_processes = task.parents()[:1]
    for slot in slots.launcher._slots:  # as when the hog is killed: its pipe ends close
        os.close(slot.commands_fd)
    _, alive = psutil.wait_procs([task, *slot_processes], timeout=10)
    assert not alive


def test_a_slot_lent_to_a_bigger_task_gets_no_one_core_task(tmp_path: Path) -> None:
    slots = Slots(tmp_path, unpinned=3)
    try:
        assert slots.launcher.start_on_idle(slots.launch(1, "sleep 3", cores=2))
        slots.events(Started, 1)
        for number in range(2, 6):  # never to a lent slot
            slots.launcher.queue(slots.launch(number, "true"))
            slots.events(Ended, number - 1)
        assert not any(type(event) is Ended and event.key == (1, 1) for event in slots.seen)
        assert {slots.launches[number].slots for number in range(2, 6)} == {(2,)}
        assert slots.launches[1].slots == (0, 1)
    finally:
        slots.close()


def test_one_file_for_both_streams_gets_both_in_order(slots: Slots) -> None:
    both = str(slots.tmp_path / "both.txt")
    slots.launcher.queue(slots.launch(1, "echo one; echo two >&2; echo three", paths=(both, both)))
    assert slots.events(Ended, 1)[0].exited.exit_code == 0
    assert Path(both).read_text() == "one\ntwo\nthree\n"


def test_a_task_whose_output_file_cannot_be_made_is_not_started(slots: Slots) -> None:
    blocker = slots.tmp_path / "a-file"
    blocker.write_text("")
    marker = slots.tmp_path / "ran"
    bad = str(blocker / "1.err")
    slots.launcher.queue(slots.launch(1, f"touch {marker}", paths=(str(slots.tmp_path / "1.out"), bad)))
    assert os.read(slots.wake_read, 16), "the loop is woken to hear of it"
    (event,) = slots.events(NotStarted, 1)
    assert isinstance(event.error, NotADirectoryError) and event.error.filename == bad
    assert slots.launcher.queued == 0
    # The slot is free for the next one, which keeps no output.
    slots.launcher.queue(slots.launch(2, f"touch {marker}", paths=(os.devnull, os.devnull)))
    assert slots.events(Ended, 1)[0].key == (2, 1)
    assert marker.exists() and not (slots.tmp_path / "2.out").exists()
