"""What a Python call's task runs: `python -S -c BOOT CALLS_FILE OFFSET LENGTH` (worker_argv).

It starts once per call, so it is light: the standard library until the result is kept (then
the store, to write it). Python starts without `site` (-S), which costs more than the rest of
the start (its .pth files: 11 of 17 ms here); the submitter's sys.path, kept in the calls file,
has the folders site would add. Only when the call cannot be loaded without it does the worker
run `site.main()` (a .pth that installs an import hook, sitecustomize) and try again.

It reads its call from the executor's calls file (hog.api.calls), runs it in the task's folder
and environment, and keeps what it returned or raised for its attempt (hog.store.calls): in the
database, or for a value above RESULT_IN_DATABASE_MAX_BYTES in a file beside the calls file.
The hog sets SLURM_HOG_DB, HOG_TASK_ID and HOG_ATTEMPT.

Exit status: 0 returned, 1 raised (the task failed; retries run the call again), 2 could not
keep its outcome (the reason is on stderr, and in the task's stderr tail).

A callable with a `checkpoint` method is asked for its state on SIGTERM (hog.api.checkpoint):
the delayed call it returns is written beside the calls file, and the next attempt runs it.
"""

import os
import pickle
import signal
import struct
import sys

# Larger values go to a file beside the calls file: the database stays small and quick to copy.
RESULT_IN_DATABASE_MAX_BYTES = 64 * 1024
# A calls file starts with the length of its header (the submitter's sys.path, pickled).
HEADER = struct.Struct("<Q")
EXIT_RETURNED, EXIT_RAISED, EXIT_UNKEPT = 0, 1, 2


def worker_argv(python: str, calls_path: str, offset: int, length: int) -> list[str]:
    """The command of one call's task: this module, found where it is installed."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = (
        f"import sys; sys.path.insert(1, {package_parent!r}); "
        "from hog.api.worker import main; sys.exit(main(sys.argv[1:]))"
    )
    return [python, "-S", "-c", boot, calls_path, str(offset), str(length)]


def checkpoint_path(calls_path: str, offset: int) -> str:
    return f"{calls_path}.{offset}.checkpoint"


def result_path(calls_path: str, task_id: int, attempt: int) -> str:
    return f"{calls_path}.{task_id}.{attempt}.result"


def load_call(calls_path: str, offset: int, length: int) -> tuple:
    """(function, args, kwargs): the checkpointed call if an earlier attempt left one."""
    try:
        return _load_call(calls_path, offset, length)
    except ImportError:
        if not sys.flags.no_site:
            raise
        import site

        site.main()  # what -S left out: .pth import hooks, sitecustomize
        return _load_call(calls_path, offset, length)


def _load_call(calls_path: str, offset: int, length: int) -> tuple:
    with open(calls_path, "rb") as handle:
        (header_length,) = HEADER.unpack(handle.read(HEADER.size))
        paths = pickle.loads(handle.read(header_length))
        # The submitter's import path: modules beside its script, its PYTHONPATH and venv.
        sys.path[1:1] = [path for path in paths if path and path not in sys.path]
        try:
            with open(checkpoint_path(calls_path, offset), "rb") as saved:
                delayed = pickle.load(saved)
            return delayed.function, delayed.args, delayed.kwargs
        except FileNotFoundError:
            pass
        handle.seek(offset)
        return pickle.loads(handle.read(length))


def new_function(code: bytes, globals_: dict, name: str) -> object:
    """A function of the submitter's script, rebuilt (hog.api.byvalue); its state comes next."""
    import builtins
    import marshal
    import types

    globals_.setdefault("__builtins__", builtins)
    return types.FunctionType(marshal.loads(code), globals_, name)


def function_state(function: object, state: dict) -> None:
    function.__globals__.update(state["globals"])  # type: ignore[attr-defined]
    function.__defaults__ = state["defaults"]  # type: ignore[attr-defined]
    function.__qualname__ = state["qualname"]  # type: ignore[attr-defined]
    function.__module__ = state["module"]
    function.__doc__ = state["doc"]
    function.__annotations__ = state["annotations"]  # type: ignore[attr-defined]


def dumps(value: object) -> bytes:
    """Plain pickle first (no import), cloudpickle for what it cannot do (lambdas, closures)."""
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def exception_record(error: BaseException) -> bytes:
    """The exception and its traceback as text, pickled; a CallError when it cannot be."""
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        return dumps((error, text))
    except Exception as reason:
        from hog.errors import CallError

        substitute = CallError(f"{type(error).__name__}: {error} (the exception cannot be pickled: {reason})")
        return pickle.dumps((substitute, text))


def import_hint(error: ImportError) -> ImportError:
    """The import error with what to do about it."""
    module = error.name or "a module"
    hint = (
        f"{error}: the call needs {module}, which {sys.executable} cannot import on "
        f"{os.uname().nodename}; install it there, add its folder to PYTHONPATH, or pickle it "
        f"with the call: cloudpickle.register_pickle_by_value({module})"
    )
    return type(error)(hint, name=error.name, path=error.path)


def keep(calls_path: str, ok: bool, record: bytes) -> int:
    """Write the outcome for this attempt; the exit status."""
    task_id = int(os.environ["HOG_TASK_ID"])
    attempt = int(os.environ["HOG_ATTEMPT"])
    path = None
    if len(record) > RESULT_IN_DATABASE_MAX_BYTES:
        path = result_path(calls_path, task_id, attempt)
        with open(path + ".tmp", "wb") as handle:
            handle.write(record)
        os.replace(path + ".tmp", path)
    try:
        import apsw  # noqa: F401 (the store's, found on the submitter's path once the call is loaded)
    except ImportError:
        import site

        site.main()  # the call could not be loaded: its folders are not on the path yet
    from hog.errors import HogError
    from hog.store.calls import record_result
    from hog.store.db import open_database

    try:
        db = open_database(os.environ["SLURM_HOG_DB"])
        try:
            record_result(db, task_id, attempt, ok, None if path else record, path)
        finally:
            db.close()
    except HogError as error:
        print(f"hog worker: the outcome of task {task_id} was not kept: {error}", file=sys.stderr)
        return EXIT_UNKEPT
    return EXIT_RETURNED if ok else EXIT_RAISED


def _ask_checkpoint(calls_path: str, offset: int, call: tuple) -> None:
    """On SIGTERM: save the callable's checkpoint, then die of the signal as it would have."""
    function, args, kwargs = call

    def on_term(signum: int, frame: object) -> None:
        try:
            delayed = function.checkpoint(*args, **kwargs)
            if delayed is not None:
                target = checkpoint_path(calls_path, offset)
                import cloudpickle

                with open(target + ".tmp", "wb") as handle:
                    handle.write(cloudpickle.dumps(delayed, pickle.HIGHEST_PROTOCOL))
                os.replace(target + ".tmp", target)
        except Exception:
            import traceback

            print("hog worker: checkpoint failed; the call runs again from its last start", file=sys.stderr)
            traceback.print_exc()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or "HOG_TASK_ID" not in os.environ:
        print("usage: hog.api.worker CALLS_FILE OFFSET LENGTH: run by a hog for HogExecutor", file=sys.stderr)
        return 2
    calls_path, offset, length = argv[0], int(argv[1]), int(argv[2])
    try:
        call = load_call(calls_path, offset, length)
    except ImportError as error:
        return keep(calls_path, False, exception_record(import_hint(error)))
    except Exception as error:
        return keep(calls_path, False, exception_record(error))
    if callable(getattr(call[0], "checkpoint", None)):
        _ask_checkpoint(calls_path, offset, call)
    function, args, kwargs = call
    try:
        value = function(*args, **kwargs)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: they are the call's outcome
        return keep(calls_path, False, exception_record(error))
    try:
        record = dumps(value)
    except Exception as error:
        from hog.errors import CallError

        name = getattr(function, "__qualname__", type(function).__qualname__)
        problem = CallError(f"the value {name} returned cannot be pickled: {type(error).__name__}: {error}")
        return keep(calls_path, False, exception_record(problem))
    return keep(calls_path, True, record)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
