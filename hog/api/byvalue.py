"""Functions of a script, pickled so that a call's worker loads them without cloudpickle.

cloudpickle sends functions of `__main__` (a script's, a notebook's) by value, and loading what
it made imports cloudpickle on the node: 24 of a worker's ~50 ms here (its dataclasses, inspect,
logging and typing). A plain function of `__main__` (no closure, no attributes, no keyword-only
defaults) is sent here as its marshalled code, the globals it names and its defaults, and rebuilt
by hog.api.worker with the standard library alone; what it refers to (other functions, modules,
constants) is pickled the same way, through cloudpickle's pickler for anything else (classes of
`__main__`, closures), which then costs the node the import. Functions of one module share one
globals dict on the node, as they do here, so they see each other's changes to it.
"""

import builtins
import io
import marshal
import pickle
import sys
import types

import cloudpickle

from hog.api.worker import function_state, new_function


def dumps(value: object) -> bytes:
    buffer = io.BytesIO()
    CallPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


class CallPickler(cloudpickle.Pickler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.module_globals: dict[str, dict] = {}  # one dict per module, shared through the memo

    def reducer_override(self, obj: object) -> object:
        if type(obj) is types.FunctionType and _plain_script_function(obj):
            return self._script_function_reduce(obj)
        if type(obj) is types.ModuleType and _importable(obj):
            return __import__, (obj.__name__, None, None, ("__name__",))
        return super().reducer_override(obj)

    def _script_function_reduce(self, function: types.FunctionType) -> tuple:
        base = self.module_globals.setdefault(function.__module__, {})
        names = _global_names(function.__code__)
        found = {name: function.__globals__[name] for name in names if name in function.__globals__}
        state = {
            "globals": found,
            "defaults": function.__defaults__,
            "qualname": function.__qualname__,
            "module": function.__module__,
            "doc": function.__doc__,
            "annotations": function.__annotations__,
        }
        args = (marshal.dumps(function.__code__), base, function.__name__)
        return new_function, args, state, None, None, function_state


def _plain_script_function(function: types.FunctionType) -> bool:
    return (
        function.__module__ == "__main__"
        and function.__closure__ is None
        and not function.__dict__
        and function.__kwdefaults__ is None
    )


def _importable(module: types.ModuleType) -> bool:
    """A module the node imports by name: not a script's, not one made at run time."""
    name = module.__name__
    return (
        name != "__main__"
        and sys.modules.get(name) is module
        and (module.__spec__ is not None or name in sys.builtin_module_names or module is builtins)
        and name not in cloudpickle.list_registry_pickle_by_value()
    )


def _global_names(code: types.CodeType) -> set[str]:
    """The global names a code object and the code nested in it may read."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names
