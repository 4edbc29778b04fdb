"""How the monitor starts hogs and follows them: a command prefix or sbatch."""

import getpass
import logging
import os
import shlex
import subprocess
import sys

from hog.errors import HogError
from hog.pilot.options import HogOptions
from hog.pilot.procs import open_for_writing, process_start_ticks
from hog.pilot.slurm import COMMAND_TIMEOUT_S, node_name
from hog.store.paths import OWNER_ONLY

log = logging.getLogger(__name__)

# SLURM job states after which the job's hog can no longer be running.
SLURM_ENDED_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}


class BackendError(HogError):
    """A backend command failed (sbatch refused a job, squeue did not answer)."""


class PrefixBackend:
    """PREFIX + hog command as a child process that lives as long as the hog (nohup, srun, ssh).

    A hog is followed by pid plus the process's start time, so a recycled pid is never taken
    for it (and never signalled).
    """

    name = "prefix"

    def __init__(self, prefix: list[str], log_mode: int = OWNER_ONLY.file) -> None:
        self.prefix = prefix
        self.log_mode = log_mode  # the queue's: a group's members all read the hogs' logs
        self.host = node_name()
        self.children: dict[str, subprocess.Popen] = {}

    def start(self, hog_id: int, hog_argv: list[str], log_path: str) -> str:
        with open_for_writing(log_path, self.log_mode, append=True) as log_file:
            try:
                process = subprocess.Popen(
                    self.prefix + hog_argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Own session: a signal to the monitor's group does not reach the hogs.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as error:
                raise BackendError(
                    f"cannot run the command prefix {shlex.join(self.prefix)!r}: {error.strerror}"
                ) from None
        # Not reaped yet, so a hog that already ended (as a zombie) still shows its start time.
        backend_id = f"{process.pid}@{process_start_ticks(process.pid, zombie_too=True)}@{self.host}"
        self.children[backend_id] = process
        return backend_id

    def alive(self, backend_ids: list[str]) -> dict[str, bool | None]:
        """True: running; False: ended; None: cannot tell (started from another host)."""
        return {backend_id: self._alive(backend_id) for backend_id in backend_ids}

    def _alive(self, backend_id: str) -> bool | None:
        pid_text, started, host = _split_id(backend_id)
        if host != self.host or pid_text is None:
            return None
        child = self.children.get(backend_id)
        if child is not None:
            if child.poll() is None:
                return True
            del self.children[backend_id]
            return False
        return bool(started) and process_start_ticks(int(pid_text)) == started

    def child_ended(self) -> bool:
        """Has a hog process started by this monitor ended since the last call (a pass is due)?

        Ended children are reaped and forgotten; `alive` then finds them gone through /proc.
        """
        ended = [backend_id for backend_id, child in self.children.items() if child.poll() is not None]
        for backend_id in ended:
            del self.children[backend_id]
        return bool(ended)


def _split_id(backend_id: str) -> tuple[str | None, str, str]:
    parts = backend_id.split("@")
    if len(parts) != 3 or not parts[0].isdigit():
        return None, "", ""
    return parts[0], parts[1], parts[2]


class SbatchBackend:
    """A batch job per hog, followed by its SLURM job id."""

    name = "sbatch"

    def __init__(self, sbatch_args: str, walltime_s: float | None, log_mode: int = OWNER_ONLY.file) -> None:
        self.sbatch_args = shlex.split(sbatch_args)
        self.walltime_s = walltime_s
        self.log_mode = log_mode  # for its batch scripts

    def start(self, hog_id: int, hog_argv: list[str], log_path: str) -> str:
        script_path = (
            log_path[: -len(".log")] + ".sbatch" if log_path.endswith(".log") else log_path + ".sbatch"
        )
        with open_for_writing(script_path, self.log_mode) as script:
            script.write(self.batch_script(hog_id, hog_argv, log_path).encode())
        result = _run(["sbatch", "--parsable", *self.sbatch_args, script_path])
        if result.returncode != 0:
            raise BackendError(
                f"sbatch refused the hog's job: {result.stderr.strip() or result.stdout.strip()}"
            )
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch printed no job id: {result.stdout.strip()!r}")
        return job_id

    def batch_script(self, hog_id: int, hog_argv: list[str], log_path: str) -> str:
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name=hog-{hog_id}",
            f"#SBATCH --output={log_path}",
            "#SBATCH --nodes=1",
            "#SBATCH --exclusive",
        ]
        if self.walltime_s is not None:
            minutes = max(1, int(-(-self.walltime_s // 60)))
            lines.append(f"#SBATCH --time={minutes}")
        # exec: the hog is the batch shell itself, so SLURM's SIGTERM reaches it directly.
        lines.append("exec " + shlex.join(hog_argv))
        return "\n".join(lines) + "\n"

    def alive(self, backend_ids: list[str]) -> dict[str, bool | None]:
        if not backend_ids:
            return {}
        states = slurm_job_states(backend_ids)
        if states is None:
            return {backend_id: None for backend_id in backend_ids}
        return {
            backend_id: (states.get(backend_id) is not None and states[backend_id] not in SLURM_ENDED_STATES)
            for backend_id in backend_ids
        }

    def child_ended(self) -> bool:
        return False  # followed through squeue on each pass


def slurm_job_states(job_ids: list[str]) -> dict[str, str] | None:
    """SLURM's state of each job this user has (recently ended ones included); None on failure."""
    result = _run(["squeue", "-h", "-t", "all", "-u", getpass.getuser(), "-o", "%i %T"])
    if result.returncode != 0:
        log.warning("squeue failed: %s", result.stderr.strip())
        return None
    wanted = set(job_ids)
    states = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted:
            states[parts[0]] = parts[1]
    return states


def scancel(job_id: str, *options: str) -> None:
    """`scancel OPTIONS JOB_ID`; BackendError saying why when SLURM refuses or does not answer."""
    result = _run(["scancel", *options, job_id])
    if result.returncode != 0:
        raise BackendError(f"scancel {job_id} failed: {result.stderr.strip() or result.stdout.strip()}")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise BackendError(f"{argv[0]} not found: is SLURM installed and on PATH?") from None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            argv, 124, "", f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S} s"
        )


def hog_command(db_path: str, timeout_s: float, hog_id: int, options: HogOptions) -> list[str]:
    """The command line of a hog that takes over the pending row `hog_id`."""
    return [
        sys.executable,
        "-m",
        "hog",
        "--db",
        os.path.abspath(db_path),
        "--timeout",
        str(timeout_s),
        "hog",
        "--hog-id",
        str(hog_id),
        *options.to_argv(),
    ]
