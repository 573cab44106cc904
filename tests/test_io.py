import json

import pytest

from evalpipe.io import (DataError, JsonlAppender, atomic_open, read_jsonl, read_partial_jsonl,
                         read_records, write_jsonl)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"id": "a"}])
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write('{"id": "half')
            raise RuntimeError("killed")
    assert path.read_text() == '{"id": "a"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_atomic_write_never_shows_a_partial_file(tmp_path):
    path = tmp_path / "new.json"
    with atomic_open(path) as handle:
        handle.write("{}")
        assert not path.exists()
    assert path.read_text() == "{}"


def test_read_records_json_list_and_jsonl(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"x": 1}, {"x": 2}]))
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    assert read_records(tmp_path / "a.json") == read_records(tmp_path / "a.jsonl") == [
        {"x": 1}, {"x": 2}]


def test_malformed_files_name_the_file_and_the_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n{"x": \n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: not valid JSON \(Expecting value\)"):
        read_jsonl(bad)
    bad_list = tmp_path / "bad.json"
    bad_list.write_text('[{"x": 1},\n {"x": }]')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(line 2, column 8: Expecting"):
        read_records(bad_list)
    scalar = tmp_path / "scalar.json"
    scalar.write_text('[{"x": 1}, 7]')
    with pytest.raises(DataError, match=r"scalar.json: record 1: expected a JSON object"):
        read_records(scalar)
    with pytest.raises(DataError, match=r"missing.json: file not found"):
        read_records(tmp_path / "missing.json")


def test_appender_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "p.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"id": 1})
        appender.write({"id": 2})
    with open(path, "a") as handle:
        handle.write('{"id": 3, "resp')  # the kill came mid-write
    assert read_partial_jsonl(path) == [{"id": 1}, {"id": 2}]
    with JsonlAppender(path) as appender:
        appender.write({"id": 3})
    assert read_partial_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    from evalpipe.io import UMASK, write_text

    write_text(tmp_path / "report.html", "<p>hi</p>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert os.umask(UMASK) == UMASK  # reading it at import left the process's umask as it was


def test_atomic_path_replaces_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    from evalpipe.io import UMASK, atomic_path

    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o666 & ~UMASK
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError("disk full")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
