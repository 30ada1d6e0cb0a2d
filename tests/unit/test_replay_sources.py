"""Replay sources: JSONL / JSONL.gz files, directories, globs, positions, bad lines."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from replay.backtest import BacktestResult, collect_events
from replay.sources import FileSet, SourceError, expand, iter_lines
from schemas.validation import Validator

NOW = datetime(2026, 3, 10, tzinfo=UTC)


def rec(i: int, channel: str = "web", customer: str = "C1") -> bytes:
    return (
        b'{"event_id":"e-%d","channel":"%s","type":"page_view",'
        b'"occurred_at":"2026-03-01T10:00:%02d+00:00","identifiers":{"customer_id":"%s"}}'
        % (i, channel.encode(), i % 60, customer.encode())
    )


def write(path: Path, lines: list[bytes], *, gz: bool = False, end: bytes = b"\n") -> Path:
    data = b"".join(line + end for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_plain_and_gzip_give_the_same_numbered_lines(tmp_path: Path) -> None:
    lines = [rec(1), b"", b"   ", rec(2), b"not json"]
    plain = write(tmp_path / "a.jsonl", lines)
    gz = write(tmp_path / "a.jsonl.gz", lines, gz=True)
    crlf = write(tmp_path / "crlf.jsonl", lines, end=b"\r\n")
    expected = [(1, rec(1)), (4, rec(2)), (5, b"not json")]
    assert list(iter_lines(plain)) == list(iter_lines(gz)) == list(iter_lines(crlf)) == expected


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    p = write(tmp_path / "log.jsonl", [rec(1)], gz=True)
    assert list(iter_lines(p)) == [(1, rec(1))]


def test_start_after_skips_lines_for_resume(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl.gz", [rec(i) for i in range(10)], gz=True)
    assert [n for n, _ in iter_lines(p, start_after=7)] == [8, 9, 10]


def test_an_oversized_line_is_cut_without_losing_the_next_one(tmp_path: Path) -> None:
    big = b'{"x":"' + b"a" * 5000 + b'"}'
    p = write(tmp_path / "a.jsonl", [rec(1), big, rec(2)])
    got = list(iter_lines(p, max_bytes=1000))
    assert [n for n, _ in got] == [1, 2, 3]
    assert len(got[1][1]) == 1001  # one byte over the bound: still rejected as too_large
    assert got[2][1] == rec(2)


def test_truncated_gzip_names_file_and_line(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(rec(i) + b"\n" for i in range(2000)))
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz:\d+: corrupt or truncated gzip"):
        list(iter_lines(p))


def test_expand_directories_globs_and_missing(tmp_path: Path) -> None:
    write(tmp_path / "d" / "b.jsonl", [rec(1)])
    write(tmp_path / "d" / "sub" / "a.jsonl.gz", [rec(1)], gz=True)
    write(tmp_path / "d" / "notes.txt", [b"x"])
    write(tmp_path / "g1.jsonl", [rec(1)])
    write(tmp_path / "g2.jsonl", [rec(1)])
    d = tmp_path / "d"
    assert expand([d]) == [d / "b.jsonl", d / "sub" / "a.jsonl.gz"]
    assert expand([str(tmp_path / "g*.jsonl")]) == [tmp_path / "g1.jsonl", tmp_path / "g2.jsonl"]
    # a file named twice (directly and through a glob) is read once
    assert expand([tmp_path / "g1.jsonl", str(tmp_path / "g*.jsonl")]) == [
        tmp_path / "g1.jsonl",
        tmp_path / "g2.jsonl",
    ]
    # no match: returned as given, so the caller reports it as missing
    assert expand([str(tmp_path / "none*.jsonl")]) == [tmp_path / "none*.jsonl"]


def test_fileset_positions_progress_and_resume(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl.gz", [rec(i) for i in range(5)], gz=True)
    b = write(tmp_path / "b.jsonl", [rec(i) for i in range(3)])
    fs = FileSet([a, b])
    got = list(fs.records())
    assert [pos for pos, _ in got] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 1),
        (1, 2),
        (1, 3),
    ]
    assert fs.bytes_read == fs.bytes_total == a.stat().st_size + b.stat().st_size
    assert [pos for pos, _ in fs.records((0, 4))] == [(0, 5), (1, 1), (1, 2), (1, 3)]
    assert [pos for pos, _ in fs.records((1, 2))] == [(1, 3)]
    assert fs.describe((1, 2)) == f"{b}:2"
    state = fs.files_state((1, 2), complete=False)
    assert [(f["done"], f["line"]) for f in state] == [(True, None), (False, 2)]


def test_bad_lines_are_counted_with_file_and_line(tmp_path: Path) -> None:
    p = write(
        tmp_path / "mixed.jsonl.gz",
        [rec(1), b"{broken", rec(2), b'{"event_id":"x","channel":"fax"}', b"[1]"],
        gz=True,
    )
    fs = FileSet([p])
    result = BacktestResult([], [], 0)
    items: list = []
    collect_events(fs.records(), fs.describe, Validator("k"), NOW, result, items.append)
    assert len(items) == 2
    assert dict(result.invalid) == {"invalid_json": 1, "unknown_channel": 1, "not_object": 1}
    assert [e.split(": ")[0] for e in result.invalid_examples] == [f"{p}:2", f"{p}:4", f"{p}:5"]
