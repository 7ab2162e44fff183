"""The layering style.md asks for, checked on the source: decoders are pure, modules stay small."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DECODE = Path(__file__).resolve().parent.parent / "flowd" / "decode"
ALLOWED_FLOWD = ("flowd.decode", "flowd.model", "flowd.errors")
FORBIDDEN_STDLIB = {"asyncio", "logging", "time", "threading", "multiprocessing", "selectors", "subprocess", "os"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_decoders_import_only_stdlib_numpy_and_the_model() -> None:
    offenders = []
    for path in sorted(DECODE.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "flowd":
                if not name.startswith(ALLOWED_FLOWD):
                    offenders.append(f"{path.name}: {name}")
            elif top == "numpy" or top == "__future__":
                continue
            elif top not in sys.stdlib_module_names or top in FORBIDDEN_STDLIB:
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders


def test_no_socket_io_in_decoders() -> None:
    """`socket` is imported only for its address formatting functions, never to open sockets."""
    for path in sorted(DECODE.glob("*.py")):
        text = path.read_text()
        assert "socket.socket(" not in text and "open(" not in text.replace("inet_", ""), path.name


MAX_MODULE_LINES = 650
"""style.md: one job per module, each under about 600 lines; split before a module becomes the
place where everything happens."""
FLOWD = DECODE.parent


def _module_lines() -> dict[str, int]:
    return {
        path.relative_to(FLOWD).as_posix(): len(path.read_text().splitlines()) for path in sorted(FLOWD.rglob("*.py"))
    }


def test_modules_stay_small() -> None:
    """Every module of flowd/, not only the decoders: a new big module fails here."""
    lines = _module_lines()
    assert "decode/ipfix.py" in lines and "enrich/chain.py" in lines  # the walk reaches every package
    too_big = {name: count for name, count in lines.items() if count > MAX_MODULE_LINES}
    assert not too_big, too_big
