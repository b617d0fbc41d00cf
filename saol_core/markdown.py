"""The one way this project writes a markdown table (reports, benchmarks, cost tables)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def table(head: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table: a header line, the separator, one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
