"""The write path of `xlstm-mlx batch`: one JSON line per finished row, resumable, sharded over ranks.

    OUT                 the result: one line per input id (finished rows, in input order once complete)
    OUT.rank-R          rank R's rows of the current run (launched runs with K > 1 only)

Every finished row is appended, flushed and fsync'ed at once, so a crash loses at most the rows in flight
and a torn last line (a write cut short) is the only damage a file can have; it is cut off on the next run.

A launched run with K ranks goes through:
  1. rank 0 repairs OUT and merges any part files a previous run left (each id once: rows already in OUT
     are skipped), then removes them;                                                   -- barrier --
  2. every rank reads OUT (the ids done) and computes the same list of pending rows;
  3. rank R appends its rows to OUT.rank-R;                                                -- barrier --
  4. rank 0 merges the part files into OUT, and, when every input id is done, rewrites OUT in input
     order (a temporary file, fsync, rename).
A crash anywhere leaves OUT and the part files as step 1 expects, so rerunning with any number of ranks
resumes without losing or duplicating a row. One process (K = 1) appends to OUT directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xlstm_mlx.errors import UsageError


def id_key(value, where: str) -> str:
    """A canonical key for a row id: ids are JSON strings or integers (1 and "1" are different ids)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UsageError(f"{where}: \"id\" must be a string or an integer, got {value!r}")
    return json.dumps(value)


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.rank-{rank}")


def part_files(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.glob(f"{out.name}.rank-*") if p.name[len(out.name) + 6:].isdigit())


def read_rows(path: Path, repair: bool) -> list[dict]:
    """The rows of a JSONL results file. A torn last line (no newline, or not JSON) is cut off when
    `repair` (else skipped); a bad line anywhere else is an error, since it is not a crash's trace."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # whatever follows the last newline is a torn write
    lines = complete.split(b"\n")[:-1]
    rows, good_end = [], 0
    for n, line in enumerate(lines):
        try:
            row = json.loads(line) if line.strip() else None
            if row is not None and (not isinstance(row, dict) or "id" not in row):
                raise ValueError("not an object with an id")
        except ValueError:
            if n == len(lines) - 1:
                break  # a garbled last line: the trace of a crash, like a torn one
            raise UsageError(f"{path}:{n + 1}: not a result line ({line[:80]!r}); this file was not written "
                             "by `xlstm-mlx batch` or was edited; fix or remove it") from None
        if row is not None:
            rows.append(row)
        good_end += len(line) + 1
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return rows


class Appender:
    """Append result rows to a file, each flushed and fsync'ed before the next (a crash loses none of them)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, row: dict) -> None:
        if self._f is None:  # a rank that does not write (tensor parallel: rank 0 writes)
            return
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge_parts(out: Path) -> int:
    """Append the rows of every OUT.rank-R whose id OUT lacks, then remove the part files. Returns the count.
    Run by rank 0 only, while no other rank writes."""
    done = {id_key(r["id"], str(out)) for r in read_rows(out, repair=True)}
    added = 0
    parts = part_files(out)
    if not parts:
        return 0
    with Appender(out) as app:
        for p in parts:
            for row in read_rows(p, repair=True):
                k = id_key(row["id"], str(p))
                if k not in done:
                    app.write(row)
                    done.add(k)
                    added += 1
    for p in parts:  # only after every row is safely in OUT
        p.unlink()
    return added


def write_in_order(out: Path, order: list[str]) -> None:
    """Rewrite OUT with its rows in the given key order (atomic: temporary file, fsync, rename)."""
    rows = {id_key(r["id"], str(out)): r for r in read_rows(out, repair=True)}
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for k in order:
            f.write(json.dumps(rows[k], ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
