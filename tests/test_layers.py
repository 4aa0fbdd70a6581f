"""Every import runs downhill: server -> retrieval -> ingest -> kb (README "Architecture").

Read from the source, function-level imports included, so a lazy import cannot hide an
arrow that runs back up.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"kb": 0, "ingest": 1, "retrieval": 2, "server": 3}


def imported_packages(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & set(FLOORS)


def uphill(package: str) -> list[str]:
    floor = FLOORS[package]
    return [
        f"{path.relative_to(ROOT)} imports {above}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for above in sorted(imported_packages(path.read_text()))
        if FLOORS[above] > floor
    ]


@pytest.mark.parametrize("package", FLOORS)
def test_no_import_runs_uphill(package):
    assert uphill(package) == []


def test_the_check_sees_lazy_imports():
    source = "def f():\n    from retrieval.search import passages_search\n    import server.api\n"
    assert imported_packages(source) == {"retrieval", "server"}
