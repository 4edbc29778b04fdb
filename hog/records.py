"""`NamedTuple` for the modules every `slurm-hog-shell` start imports, without importing typing.

make starts one shell per recipe; typing (with re, which it imports) is 2-5 ms of a start of about
15 ms. A class written `class Row(NamedTuple)` with `from hog.records import NamedTuple` becomes,
as with typing's, a `collections.namedtuple` (already imported by apsw) with the class body's
annotated fields, defaults, methods and properties, so type checkers are told it is typing's.
"""

import collections

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import NamedTuple
else:
    # What a class body holds that is not the class's own: namedtuple makes these itself.
    _MADE_BY_NAMEDTUPLE = {"__module__", "__qualname__", "__annotations__", "__annotate__", "__doc__"}

    def _fields(namespace: dict) -> dict:
        if "__annotations__" in namespace:
            return namespace["__annotations__"]
        return namespace["__annotate__"](1)  # Python 3.14 keeps them as a function; 1 is VALUE

    class _NamedTupleMeta(type):
        def __new__(cls, name: str, bases: tuple, namespace: dict):
            if not bases:
                return super().__new__(cls, name, bases, namespace)
            fields = _fields(namespace)
            defaults = [namespace[field] for field in fields if field in namespace]
            made = collections.namedtuple(
                name, list(fields), defaults=defaults, module=namespace["__module__"]
            )
            made.__qualname__ = namespace.get("__qualname__", name)
            made.__annotations__ = dict(fields)
            if namespace.get("__doc__"):
                made.__doc__ = namespace["__doc__"]
            for key, value in namespace.items():
                if key not in fields and key not in _MADE_BY_NAMEDTUPLE:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMeta):
        """Base of a named tuple class: `class Point(NamedTuple): x: int; y: int = 0`."""
