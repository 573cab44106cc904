import json

import pytest

from evalpipe.io import (
    DataError,
    JsonlAppender,
    atomic_open,
    read_jsonl,
    read_partial_jsonl,
    read_records,
    write_jsonl,
)


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


def test_a_kill_mid_character_leaves_a_torn_last_line_that_is_dropped(tmp_path):
    path = tmp_path / "p.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"id": 1, "response": "café"})
    line = json.dumps({"id": 2, "response": "naïve ☕"}, ensure_ascii=False).encode()
    with open(path, "ab") as handle:
        handle.write(line[:line.index("☕".encode()) + 1])  # cut inside the 3-byte character
    assert read_partial_jsonl(path) == [{"id": 1, "response": "café"}]
    with JsonlAppender(path) as appender:  # the resumed run cuts the torn line and goes on
        appender.write({"id": 2})
    assert read_partial_jsonl(path) == [{"id": 1, "response": "café"}, {"id": 2}]


def test_a_progress_file_damaged_before_its_last_line_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": "caf\xc3"}\n{"id": 3}\n')
    with pytest.raises(DataError, match=r"^.*p\.jsonl: line 2: not UTF-8 text$"):
        read_partial_jsonl(path)
    path.write_bytes(b'{"id": 1}\n{"id": \n{"id": 3}\n')
    with pytest.raises(DataError,
                       match=r"^.*p\.jsonl: line 2: not valid JSON \(Expecting value\)$"):
        read_partial_jsonl(path)
    path.write_bytes(b'{"id": 1}\n[1, 2]\n{"id": 3}\n')
    with pytest.raises(DataError, match=r"^.*p\.jsonl: line 2: expected a JSON object$"):
        read_partial_jsonl(path)
    # A last line that ends in a newline was written whole: damage there is no kill either.
    path.write_bytes(b'{"id": 1}\n{"id": \n')
    with pytest.raises(DataError, match=r"^.*p\.jsonl: line 2: not valid JSON"):
        read_partial_jsonl(path)


def test_a_progress_file_splits_at_newlines_only(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 and U+0085 as they are; str.splitlines
    would break a record at them."""
    path = tmp_path / "p.jsonl"
    records = [{"id": 1, "response": "one\u2028two\x85three"}, {"id": 2, "response": "x"}]
    with JsonlAppender(path) as appender:
        for record in records:
            appender.write(record)
    assert read_partial_jsonl(path) == records
