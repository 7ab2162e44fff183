"""`settle_heap` in a process of its own (it freezes the heap of whoever calls it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from flowd.server.heap import YOUNG_THRESHOLD, settle_heap

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node
        return node

    kept = [cycle() for _ in range(1000)]  # startup objects, still referenced
    startup_garbage = weakref.ref(cycle())  # garbage from setting up: collected, not frozen
    settle_heap()
    assert startup_garbage() is None
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    tracked = len(gc.get_objects())
    assert tracked < 100, tracked  # collections no longer visit the startup heap

    later = weakref.ref(cycle())  # cyclic garbage made after settling is still collected
    gc.collect()
    assert later() is None
    print("ok")
    """
)


def test_settled_heap_is_frozen_and_later_cycles_are_collected() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
