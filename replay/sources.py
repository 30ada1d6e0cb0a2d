"""Reading historic event logs: JSONL and JSONL.gz, streamed line by line.

Never loads a whole file: a 10 GB log is read with constant memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def open_log(path: Path) -> IO[bytes]:
    """Open a log for binary reading; ``.gz`` files (by magic bytes) are decompressed."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each non-blank line, newline stripped."""
    with open_log(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield lineno, line


def expand(paths: list[Path]) -> list[Path]:
    """Files named directly, plus ``*.jsonl``/``*.jsonl.gz`` inside named directories."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.name.endswith((".jsonl", ".jsonl.gz"))))
        else:
            out.append(p)
    return out
