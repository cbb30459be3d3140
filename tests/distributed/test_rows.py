"""The batch write path (distributed/rows.py): torn lines, part files, merge without duplicates, final order."""

import json

import pytest

from xlstm_mlx.distributed.rows import Appender, id_key, merge_parts, part_files, part_path, read_rows, write_in_order
from xlstm_mlx.errors import UsageError


def line(i):
    return json.dumps({"id": i, "text": f"t{i}"}) + "\n"


def test_a_torn_or_garbled_last_line_is_cut_off_and_nothing_else(tmp_path):
    f = tmp_path / "out.jsonl"
    f.write_text(line("a") + line("b") + '{"id": "c", "te')
    assert [r["id"] for r in read_rows(f, repair=False)] == ["a", "b"]
    assert f.read_text().endswith('"te')  # not repaired unless asked
    assert [r["id"] for r in read_rows(f, repair=True)] == ["a", "b"]
    assert f.read_text() == line("a") + line("b")
    f.write_text(line("a") + "\x00\x00\x00\n")  # a garbled last line (a crash of the file system)
    assert [r["id"] for r in read_rows(f, repair=True)] == ["a"] and f.read_text() == line("a")


def test_a_bad_line_before_the_last_is_an_error_not_a_repair(tmp_path):
    f = tmp_path / "out.jsonl"
    f.write_text(line("a") + "not json\n" + line("b"))
    with pytest.raises(UsageError, match=r"out.jsonl:2: not a result line"):
        read_rows(f, repair=True)
    assert f.read_text() == line("a") + "not json\n" + line("b")  # untouched


def test_merge_appends_each_id_once_and_removes_the_parts(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(line("a"))
    part_path(out, 0).write_text(line("a") + line("b"))  # "a" was merged before a crash removed nothing
    part_path(out, 3).write_text(line("c") + '{"id": "d"')  # a torn row of a killed rank
    (tmp_path / "out.jsonl.rank-x").write_text("unrelated")
    assert [p.name for p in part_files(out)] == ["out.jsonl.rank-0", "out.jsonl.rank-3"]
    assert merge_parts(out) == 2
    assert [r["id"] for r in read_rows(out, repair=False)] == ["a", "b", "c"]
    assert part_files(out) == [] and (tmp_path / "out.jsonl.rank-x").exists()


def test_final_order_and_ids(tmp_path):
    out = tmp_path / "out.jsonl"
    with Appender(out) as app:
        for i in ("b", 2, "a"):
            app.write({"id": i, "text": ""})
    write_in_order(out, [id_key(i, "") for i in ("a", "b", 2)])
    assert [r["id"] for r in read_rows(out, repair=False)] == ["a", "b", 2]
    assert id_key(1, "") != id_key("1", "")
    with pytest.raises(UsageError, match="must be a string or an integer"):
        id_key(1.5, "in.jsonl:3")
