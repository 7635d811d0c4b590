"""The daemon is wiring only (issue #8): the ``Daemon`` class stays at most 300 lines, so a new
piece of state gets an owner with a small surface of its own, not more methods on the daemon."""

from __future__ import annotations

import ast
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[2] / "lvsd" / "daemon.py"
MAX_DAEMON_LINES = 300


def class_lines(source: str, name: str) -> int:
    """The lines of the top-level class ``name`` in ``source``, decorators to its last line."""
    (node,) = [node for node in ast.parse(source).body
               if isinstance(node, ast.ClassDef) and node.name == name]
    assert node.end_lineno is not None
    return node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1


def test_the_daemon_class_is_at_most_300_lines() -> None:
    lines = class_lines(DAEMON.read_text(), "Daemon")
    assert lines <= MAX_DAEMON_LINES, (
        f"lvsd/daemon.py: the Daemon class is {lines} lines (at most {MAX_DAEMON_LINES}); "
        f"move a cohesive piece of state into an owner of its own")


def test_a_class_counts_from_its_decorator_to_its_last_line_and_nothing_around_it() -> None:
    source = ("import dataclasses\n\n\n@dataclasses.dataclass\nclass Daemon:\n    a: int = 1\n\n"
              "    def f(self) -> int:\n        return 2\n\n\ndef after() -> None:\n    pass\n")
    assert class_lines(source, "Daemon") == 6
