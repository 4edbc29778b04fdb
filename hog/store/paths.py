"""Where the files beside a queue database are, and the modes that keep them private.

For the queue FILE:

    FILE.lock                                  the flock that serialises writers (db.py)
    FILE.doorbell                              counters that wake idle hogs and `run` (doorbell.py)
    FILE.logs/tasks/NNNNNN/ID.ATTEMPT.out|err  a task's default output, a thousand tasks a folder
    FILE.logs/tasks/NNNNNN/K/ID.ATTEMPT...     the same on a shared filesystem, K = ID mod 8
    FILE.logs/hogs/hog-N.log                   the log of a hog the monitor started
    FILE.logs/hogs/hog-N.pids                  a hog's tasks' process groups, for its reaper
    FILE.monitor.pid, .log, .lock              the monitor's pid file, log and lock
    FILE.monitor-POOL.pid, .log, .lock         those of the monitor of the pool POOL
    FILE.calls/                                Python calls of hog.HogExecutor and large results

A queue shared with a group (`init --group`) stays usable by every member whoever makes a file:
its folders are setgid, so what is made inside keeps the queue's group; the files beside the
database are given its group; and the queue's modes are kept whatever the creator's umask.
"""

import os
import stat

from hog.pools import DEFAULT_POOL
from hog.records import NamedTuple

# Tasks per output folder: with .out and .err per attempt a folder holds a few thousand files.
TASKS_PER_FOLDER = 1000
# Subfolders each output folder spreads its tasks over (by id) on a shared filesystem: the tasks
# that run at once have neighbouring ids, and a create holds its folder's lock (the kernel's, a
# metadata server's) for its round trips, so in one folder their files are made one after
# another: spread, 4 hogs' tasks ran 2x as fast on a 20 ms-fsync mount (bench_slowfs.py). On a
# local disk they stay in the folder: there the subfolders made creates slower (ext4 puts each
# new folder in a block group of its own; bench_throughput.py 0.65x against 1.19x xargs).
SUBFOLDERS = 8
# Filesystems (as /proc/self/mounts names them; and any FUSE one) whose creates are round trips.
SHARED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cifs", "smb3", "9p", "glusterfs", "panfs"}
    | {"wekafs", "orangefs", "pvfs2"}
)
_spread_of: dict[str, bool] = {}  # logs folder -> whether its tasks' files are spread


def on_shared_filesystem(path: str) -> bool:
    """Whether `path` is on a network or parallel filesystem (or a FUSE one), by its mount."""
    try:
        with open("/proc/self/mounts") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return False
    real = os.path.realpath(path)
    longest, kind = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(longest):
            longest, kind = point, fields[2]
    return kind in SHARED_FILESYSTEMS or kind.startswith("fuse")


class Modes(NamedTuple):
    folder: int
    file: int


OWNER_ONLY = Modes(0o700, 0o600)
# setgid: the folders and files made inside keep the queue's group, whoever makes them.
OWNER_AND_GROUP = Modes(0o2770, 0o660)


class QueueFiles(NamedTuple):
    """The names of the files beside one queue database.

    The lock and the monitor's files keep the database path as given; the logs folder is made
    absolute, because its names are written into the queue and read by tasks in other folders.
    """

    database: str

    @property
    def lock(self) -> str:
        return self.database + ".lock"

    @property
    def doorbell(self) -> str:
        return self.database + ".doorbell"

    @property
    def logs(self) -> str:
        return os.path.abspath(self.database) + ".logs"

    @property
    def tasks(self) -> str:
        return os.path.join(self.logs, "tasks")

    @property
    def hogs(self) -> str:
        return os.path.join(self.logs, "hogs")

    @property
    def calls(self) -> str:
        """The pickled Python calls of HogExecutor, their checkpoints and their large results."""
        return os.path.abspath(self.database) + ".calls"

    @property
    def spread(self) -> bool:
        """Whether hogs write the tasks' default files in subfolders: on a shared filesystem."""
        logs = self.logs
        if logs not in _spread_of:
            _spread_of[logs] = on_shared_filesystem(os.path.dirname(logs))
        return _spread_of[logs]

    def task_output(self, task_id: int, attempt: int, stream: str) -> str:
        """The default file for `stream` ("out" or "err") of one attempt, where a hog writes it."""
        folder = self.task_subfolder(task_id) if self.spread else self.task_folder(task_id)
        return os.path.join(folder, f"{task_id}.{attempt}.{stream}")

    def task_output_found(self, task_id: int, attempt: int, stream: str) -> str:
        """The default file of one attempt to read: where a hog writes it here, or else where
        one wrote it otherwise (the queue's filesystem seen another way, or an older hog)."""
        path = self.task_output(task_id, attempt, stream)
        if os.path.exists(path):
            return path
        folder = self.task_folder(task_id) if self.spread else self.task_subfolder(task_id)
        other = os.path.join(folder, f"{task_id}.{attempt}.{stream}")
        return other if os.path.exists(other) else path

    def task_folder(self, task_id: int) -> str:
        """The folder of the default files of `task_id` and its neighbours (TASKS_PER_FOLDER)."""
        return os.path.join(self.tasks, f"{task_id // TASKS_PER_FOLDER:06d}")

    def task_subfolder(self, task_id: int) -> str:
        """The subfolder of the task's folder its default files are in (SUBFOLDERS)."""
        return os.path.join(self.task_folder(task_id), str(task_id % SUBFOLDERS))

    def hog_log(self, hog_id: int) -> str:
        return os.path.join(self.hogs, f"hog-{hog_id}.log")

    def hog_pids(self, hog_id: int) -> str:
        """Where a hog notes its tasks' process groups (each slot process writes, healing reads)."""
        return os.path.join(self.hogs, f"hog-{hog_id}.pids")

    @property
    def monitor_pid(self) -> str:
        return self.monitor_file(DEFAULT_POOL, ".pid")

    @property
    def monitor_log(self) -> str:
        return self.monitor_file(DEFAULT_POOL, ".log")

    @property
    def monitor_lock(self) -> str:
        return self.monitor_file(DEFAULT_POOL, ".lock")

    def monitor_file(self, pool: str, suffix: str) -> str:
        """The pid file (".pid"), log (".log") or lock (".lock") of the monitor of `pool`: those
        of the default pool keep the names they had before there were pools."""
        return self.database + (".monitor" if pool == DEFAULT_POOL else f".monitor-{pool}") + suffix

    def private_modes(self) -> Modes:
        """Modes for the logs: owner and group when the database is shared with its group."""
        try:
            return self._sharing()[0]
        except OSError:
            return OWNER_ONLY

    def open_beside(self, path: str, flags: int) -> int:
        """Open, creating it if need be, one of the files beside the database (its lock, the
        monitor's files) as private as the database: for a shared one, in its group."""
        modes, group_id = self._sharing()
        return create_file(path, flags, modes.file, group_id)

    def make_folders(self, path: str) -> None:
        """Make the folder `path` (in the logs) and those missing above it, as private as the
        database: for a shared one, setgid and in its group."""
        modes, group_id = self._sharing()
        make_private_dirs(path, modes.folder, group_id)

    def _sharing(self) -> tuple[Modes, int | None]:
        """The queue's modes, and its group when it is shared with one."""
        info = os.stat(self.database)
        shared = info.st_mode & 0o060 == 0o060
        return (OWNER_AND_GROUP, info.st_gid) if shared else (OWNER_ONLY, None)


def make_private_dirs(path: str, mode: int, group_id: int | None = None) -> None:
    """Like os.makedirs, but every folder it creates gets `mode` whatever the umask (makedirs
    gives only the last), and `group_id` if given (else its parent's, when that is setgid)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue
        if group_id is not None:
            os.chown(folder, -1, group_id)
        os.chmod(folder, mode)  # after chown, which may clear setgid; the umask took bits too


def create_file(path: str, flags: int, mode: int, group_id: int | None = None) -> int:
    """os.open(path, flags | O_CREAT | O_CLOEXEC, mode), then `keep_mode`."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        keep_mode(fd, mode, group_id)
    except BaseException:
        os.close(fd)
        raise
    return fd


def keep_mode(fd: int, mode: int, group_id: int | None = None) -> None:
    """Give a file just opened the queue's `mode` whatever the umask, and `group_id` if given.

    A mode that gives other users nothing (0600, 0660: the queue's own files) is kept whatever
    the umask, so that the members of a group can all write what one of them made; a mode that
    does (0666, for a file the user named) is left to the umask, as open(2) does. Only a file
    this process owns is changed. Costs nothing when the umask takes no bits of `mode` and no
    group is asked for.
    """
    if group_id is not None:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid():
            if info.st_gid != group_id:
                os.fchown(fd, -1, group_id)
            if stat.S_IMODE(info.st_mode) != mode:
                os.fchmod(fd, mode)
    elif not mode & 0o007 and mode & _umask():
        # A file made earlier by another user keeps the mode its owner gave it.
        try:  # noqa: SIM105 (contextlib is kept off slurm-hog-shell's start)
            os.fchmod(fd, mode)
        except PermissionError:
            pass


_umask_read: list[int] = []  # this process's umask once read


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    if not _umask_read:
        _umask_read.append(_read_umask())
    return _umask_read[0]


def _read_umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777  # unknown: assume it takes every bit, and set the mode each time


def missing_permission(path: str) -> str | None:
    """What keeps this user from reading `path`, in words: the first folder on the way that they
    may not enter, or the file itself; None when nothing does."""
    absolute = os.path.abspath(path)
    folder = os.path.dirname(absolute)
    ancestors = []
    while True:
        ancestors.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for folder in reversed(ancestors):
        if not os.access(folder, os.X_OK):
            if not os.path.isdir(folder):
                return None  # missing, not closed
            return f"you may not enter the folder {folder} ({_owners(folder)}) on the way to {absolute}"
    if os.path.lexists(absolute) and not os.access(absolute, os.R_OK):
        return f"you may not read {absolute} ({_owners(absolute)})"
    return None


def _owners(path: str) -> str:
    """`mode 2770, owner alice, group lab`: who may do what with a path."""
    import grp  # only for messages: not imported on every start
    import pwd

    try:
        info = os.stat(path)
    except OSError as error:
        return error.strerror or "cannot tell why"
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"mode {stat.S_IMODE(info.st_mode):o}, owner {owner}, group {group}"
