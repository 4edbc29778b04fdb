"""The tree shows the architecture: imports point one way, cli → api → fleet → pilot → store → leaves."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hog"
# A wing may import its own modules, the leaves at hog/ and the wings ranked below it.
RANK = {"cli": 5, "api": 4, "fleet": 3, "pilot": 2, "store": 1, "": 0}
CLICK_ALLOWED = {"cli"}


def wing_of(module: str) -> str:
    if module == "hog.__main__":
        return "cli"  # `python -m hog` is the command line
    if module == "hog.__init__":
        return "api"  # the package's front door exports the library (hog.Queue, hog.HogExecutor)
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANK else ""


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import; the tree uses absolute ones"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_point_down(path: pathlib.Path) -> None:
    module = ".".join(("hog", *path.relative_to(PACKAGE).with_suffix("").parts))
    wing = wing_of(module)
    for name in imports_of(path):
        if name == "click" or name.startswith("click."):
            assert wing in CLICK_ALLOWED, f"{module} imports click: only hog.cli may"
        if not name.startswith("hog.") or name.removeprefix("hog.") not in _known():
            continue
        target = wing_of(name) if name.count(".") > 1 else ""
        assert RANK[target] <= RANK[wing], f"{module} imports {name}: an arrow pointing up"
        if wing == "":
            assert target == "", f"the leaf {module} imports {name}: leaves import no wing"


def _known() -> set[str]:
    known = set()
    for path in MODULES:
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        known.add(".".join(parts))
        if len(parts) > 1:
            known.add(parts[0])
    return known


def test_no_module_passes_600_lines() -> None:
    """A room that grows past this owns two things: split it."""
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in MODULES}
    assert {name: size for name, size in sizes.items() if size > 600} == {}
