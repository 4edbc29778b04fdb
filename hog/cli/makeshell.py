"""slurm-hog-shell: a SHELL for make that runs each recipe as a task on the hogs.

    make -j32 SHELL=slurm-hog-shell
    .SHELLFLAGS := --cores 4 --time 30m -c

make runs `$(SHELL) $(.SHELLFLAGS) 'recipe line'` (the whole recipe under .ONESHELL), with its
exported variables in the environment and the target's folder as the working folder. This
submits `/bin/sh -c 'recipe line'` with that environment and folder, copies the task's output to
its own stdout and stderr, and exits with the task's status, so make sees the recipe as if it
ran here. Its options are the resources of the task; variables make exports (SLURM_HOG_CORES and
the others in VARIABLES) give them too, and options win.

No click here: make starts one of these per recipe, and click costs a third of a start.
"""

import os
import sys

from hog.errors import HogError, UsageError

PROG = "slurm-hog-shell"
USAGE = (
    f"usage: {PROG} [--db FILE] [--cores N] [--gpus N] [--mem SIZE] [--time DURATION] [--priority N] "
    "[--retries N] [--name NAME] [--pool NAME] [--kind NAME] [--max-wait DURATION] [-e] [-x] -c 'COMMAND'"
)
# Options and the variables that give them too (an option wins), for .SHELLFLAGS and `export`.
VARIABLES = {
    "--cores": "SLURM_HOG_CORES",
    "--gpus": "SLURM_HOG_GPUS",
    "--mem": "SLURM_HOG_MEM",
    "--time": "SLURM_HOG_TIME",
    "--priority": "SLURM_HOG_PRIORITY",
    "--retries": "SLURM_HOG_RETRIES",
    "--name": "SLURM_HOG_NAME",
    "--pool": "SLURM_HOG_POOL",
    "--kind": "SLURM_HOG_KIND",
    "--max-wait": "SLURM_HOG_MAX_WAIT",
    "--db": "SLURM_HOG_DB",
}
SHELL_FLAGS = "eux"  # passed on to /bin/sh: -e stops at the first failure, as make's .POSIX asks
_PREFIXES = " \t@+-"  # what make strips from the start of a line under .ONESHELL


def parse(args: list[str], environ: dict[str, str]) -> tuple[dict[str, str], str, str]:
    """The options (by name, from the variables and then the arguments), sh's flags and the
    command; UsageError for anything else."""
    values = {option: environ[name] for option, name in VARIABLES.items() if environ.get(name)}
    flags = ""
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word.startswith("--"):
            option, equals, value = word.partition("=")
            if option not in VARIABLES:
                raise UsageError(f"unknown option {option} (in .SHELLFLAGS?); {USAGE}")
            if not equals:
                if index == len(args):
                    raise UsageError(f"{option} needs a value; {USAGE}")
                value = args[index]
                index += 1
            values[option] = value
        elif word.startswith("-") and len(word) > 1 and set(word[1:]) <= set(SHELL_FLAGS + "c"):
            flags += word[1:].replace("c", "")
            if "c" in word:
                if index == len(args):
                    raise UsageError(f"-c needs the command to run; {USAGE}")
                return values, flags, args[index]
        else:
            raise UsageError(f"unknown argument {word!r}: options come before -c COMMAND; {USAGE}")
    raise UsageError(
        f"no -c COMMAND: make passes the recipe after .SHELLFLAGS, which must end in -c; {USAGE}"
    )


def one_shell(command: str) -> str:
    """What make removes for a POSIX shell under .ONESHELL and leaves to any other: the blanks
    and @, - and + that start each line after the first (a line after a backslash continues)."""
    parts: list[str] = []
    position = 0
    while position < len(command):
        while position < len(command) and command[position] in _PREFIXES:
            position += 1
        end = position
        while end < len(command):
            character = command[end]
            end += 2 if character == "\\" else 1  # what follows a backslash is the line's own
            if character == "\n":
                break
        parts.append(command[position:end])
        position = end
    return "".join(parts)


def _number(value: str, option: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise UsageError(f"bad {option} {value!r}: give a whole number from {low} to {high}")
    return number


def _gpus(text: str) -> int:
    from hog.gpushare import parse_gpus  # fractions imports decimal: only when --gpus is given

    return parse_gpus(text)


# A kind's options (kept by submit's parameter names) that this shell has too.
_KIND_OPTIONS = {
    "cores": "--cores",
    "gpus": "--gpus",
    "mem": "--mem",
    "time_limit": "--time",
    "priority": "--priority",
    "retries": "--retries",
    "name": "--name",
    "pool": "--pool",
}


def with_kind(values: dict[str, str], db) -> dict[str, str]:
    """`values` with those of the kind named by --kind where no option or variable gave them, as
    `submit --kind` does; a kind's options this shell does not have are left out."""
    if "--kind" not in values:
        return values
    from hog.store.kinds import get_kind

    kind = get_kind(db, values["--kind"])
    merged = dict(values)
    for name, raw in kind.options.items():
        option = _KIND_OPTIONS.get(name)
        if option is not None and option not in merged and isinstance(raw, str):
            merged[option] = raw
    return merged


def submit_options(values: dict[str, str]):
    """The task's settings from the options (make's environment and folder are the task's)."""
    from hog.pools import DEFAULT_POOL, check_pool
    from hog.store.submitting import SubmitOptions, captured_environment
    from hog.timeutil import parse_duration, parse_size

    get = values.get
    return SubmitOptions(
        cores=_number(get("--cores", "1"), "--cores", 1, 100_000),
        gpus=_gpus(values["--gpus"]) if "--gpus" in values else 0,
        mem_bytes=parse_size(values["--mem"], what="--mem") if "--mem" in values else None,
        time_limit_s=parse_duration(values["--time"], what="--time") if "--time" in values else None,
        priority=_number(get("--priority", "0"), "--priority", -1_000_000, 1_000_000),
        max_retries=_number(get("--retries", "0"), "--retries", 0, 1000),
        name=get("--name"),
        cwd=os.getcwd(),
        environment=captured_environment(),
        kind=get("--kind"),
        pool=check_pool(get("--pool", DEFAULT_POOL)),
    )


def main(argv: list[str] | None = None) -> None:
    from hog.cli.follow import DEFAULT_MAX_WAIT_S, Follower, Signals, attempt_outputs

    signals = Signals()  # before the submit: an interrupt after it cancels the task
    try:
        values, flags, command = parse(sys.argv[1:] if argv is None else argv, dict(os.environ))
        from hog.store import submitting
        from hog.store.db import DEFAULT_DB, open_database

        db_path = values.get("--db") or DEFAULT_DB
        db = open_database(db_path)
        options = submit_options(with_kind(values, db))
        if "\0" in command:
            raise UsageError("the command contains a NUL byte, which no program can receive")
        if "MAKELEVEL" in os.environ:
            command = one_shell(command)
        max_wait_s = DEFAULT_MAX_WAIT_S
        if "--max-wait" in values:
            from hog.timeutil import parse_duration

            max_wait_s = parse_duration(values["--max-wait"], what="--max-wait")
        argv_text = submitting.encode_argv(["/bin/sh", *(["-" + flags] if flags else []), "-c", command])
        task_id, _ = submitting.submit(db, [(submitting.readable(command), argv_text)], options)
        outputs = attempt_outputs(db_path, options, task_id)
        status = Follower(db, task_id, outputs, PROG, max_wait_s, signals).follow()
        db.close()
    except HogError as error:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        status = error.exit_code
    leave(status)


def leave(status: int) -> None:
    """Exit with `status` once the output is out, without the interpreter's teardown: a client
    runs per recipe, and tearing down its modules (apsw's most) costs a third of its start."""
    from hog.cli.follow import flush_output

    flush_output()
    os._exit(status)
