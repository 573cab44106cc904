import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from evalpipe.config import load_config
from evalpipe.errors import EvalpipeError
from evalpipe.io import DataError, read_jsonl
from evalpipe.paths import RunPaths
from evalpipe.records import content_id
from evalpipe.stages.pipeline import Pipeline
from evalpipe.stages.prepare import split, with_ids


def make_records(n: int) -> list[dict]:
    return [{"instruction": f"Task {i}", "input": "" if i % 2 else f"in {i}",
             "output": f"Answer {i}"} for i in range(n)]


def prepare(tmp_path: Path, source: Path | str, *overrides: str) -> RunPaths:
    config = load_config(None, [f"data.source={source}", *overrides])
    paths = RunPaths(results=tmp_path / "results", run="t", datasets=tmp_path / "datasets")
    Pipeline(config, paths, echo=lambda _: None).ensure("prepare")
    return paths


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def test_the_real_file_splits_like_the_book(tmp_path, instruction_data):
    paths = prepare(tmp_path, instruction_data)
    out = paths.stage_dir("prepare")
    train, val, test = (read_jsonl(out / f"{n}.jsonl") for n in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert test[0]["instruction"] == "Rewrite the sentence using a simile."
    assert list(test[0]) == ["id", "instruction", "input", "output"]
    source = json.loads(instruction_data.read_text())
    assert [r["instruction"] for r in train] == [r["instruction"] for r in source[:935]]
    assert [r["instruction"] for r in val] == [r["instruction"] for r in source[1045:]]
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"total": 1100, "train": 935, "val": 55, "test": 110}
    ids = [r["id"] for r in train + val + test]
    assert len(set(ids)) == 1100


def test_book_split_and_seeded_shuffle():
    records = with_ids(make_records(20))
    config = load_config(None)
    parts = split(records, config.data)
    assert [len(parts[n]) for n in ("train", "test", "val")] == [17, 2, 1]
    assert parts["test"] == records[17:19] and parts["val"] == records[19:]
    config = load_config(None, ["data.split=shuffle", "data.seed=1"])
    shuffled = split(records, config.data)
    assert shuffled == split(records, config.data)  # the same seed, the same split
    assert shuffled["train"] != parts["train"]
    assert sorted(r["id"] for n in shuffled for r in shuffled[n]) == sorted(r["id"] for r in records)
    other = split(records, load_config(None, ["data.split=shuffle", "data.seed=2"]).data)
    assert other["train"] != shuffled["train"]


def test_ids_are_stable_content_hashes_and_unique():
    record = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    assert content_id(record) == content_id(dict(reversed(list(record.items()))))
    expected = hashlib.sha256(json.dumps(["Say hi.", "", "Hi."]).encode()).hexdigest()[:12]
    assert content_id(record) == expected == "b7634ab2f933"
    assert content_id({**record, "output": "Hello."}) != content_id(record)
    ids = [r["id"] for r in with_ids([record, {**record}, {**record, "input": "x"}, {**record}])]
    assert ids == ["b7634ab2f933", "b7634ab2f933-2", ids[2], "b7634ab2f933-3"]


def test_report_lists_duplicates_and_leakage_by_id(tmp_path):
    records = make_records(20)
    records[3] = dict(records[1])  # exact duplicate inside train
    records[18] = {**records[5], "output": "A different answer"}  # test prompt seen in train
    records[19] = dict(records[7])  # validation: exact duplicate of a train record
    paths = prepare(tmp_path, write_json(tmp_path / "d.json", records))
    report = json.loads((paths.stage_dir("prepare") / "report.json").read_text())
    test = read_jsonl(paths.stage_dir("prepare") / "test.jsonl")
    val = read_jsonl(paths.stage_dir("prepare") / "val.jsonl")
    base1, base7 = content_id(records[1]), content_id(records[7])
    assert report["duplicates"] == [[base1, f"{base1}-2"], [base7, f"{base7}-2"]]
    assert report["leakage"] == {"val": [val[0]["id"]], "test": [test[1]["id"]]}
    assert test[1]["output"] == "A different answer"


@pytest.mark.parametrize("record, message", [
    ({"input": "", "output": "x"}, "record 1: field 'instruction' is missing"),
    ({"instruction": "x", "output": "x"}, "record 1: field 'input' is missing"),
    ({"instruction": "x", "input": ""}, "record 1: field 'output' is missing"),
    ({"instruction": 3, "input": "", "output": "x"},
     "record 1: field 'instruction' must be a string, got int"),
    ({"instruction": "x", "input": None, "output": "x"},
     "record 1: field 'input' must be a string, got NoneType"),
    ({"instruction": "  ", "input": "", "output": "x"}, "record 1: field 'instruction' is empty"),
    ({"instruction": "x", "input": "", "output": ""}, "record 1: field 'output' is empty"),
])
def test_a_bad_record_names_file_index_and_field_and_writes_nothing(tmp_path, record, message):
    source = write_json(tmp_path / "bad.json", [make_records(1)[0], record])
    with pytest.raises(DataError) as err:
        prepare(tmp_path, source)
    assert str(err.value) == f"{source}: {message}"
    assert not (tmp_path / "results/t/prepare/train.jsonl").exists()


def test_jsonl_source_and_malformed_json(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in make_records(20)))
    paths = prepare(tmp_path, jsonl)
    assert len(read_jsonl(paths.stage_dir("prepare") / "train.jsonl")) == 17
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(make_records(1)[0]) + "\n{not json}\n")
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: not valid JSON"):
        prepare(tmp_path, broken)


def test_missing_source_and_checksum(tmp_path):
    with pytest.raises(DataError, match=r"data.source: file not found: .*nothing.json"):
        prepare(tmp_path, tmp_path / "nothing.json")
    source = write_json(tmp_path / "d.json", make_records(20))
    with pytest.raises(DataError, match=r"d.json: SHA-256 is [0-9a-f]{64}, but data.sha256 "
                                        r"expects 00ff"):
        prepare(tmp_path, source, "data.sha256=00ff")


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_url_is_downloaded_once_into_datasets_raw(tmp_path, http_folder):
    www, base = http_folder
    write_json(www / "instruction-data.json", make_records(20))
    paths = prepare(tmp_path, f"{base}/instruction-data.json")
    (cached,) = (tmp_path / "datasets/raw").iterdir()
    assert cached.name.endswith("-instruction-data.json")
    assert json.loads(cached.read_text()) == make_records(20)
    (www / "instruction-data.json").unlink()  # the server no longer has it: the cache serves
    prepare(tmp_path, f"{base}/instruction-data.json", "data.split=shuffle")
    assert len(read_jsonl(paths.stage_dir("prepare") / "train.jsonl")) == 17


def test_a_download_failing_its_checksum_is_not_kept(tmp_path, http_folder):
    www, base = http_folder
    write_json(www / "d.json", make_records(20))
    with pytest.raises(DataError, match="but data.sha256 expects abc"):
        prepare(tmp_path, f"{base}/d.json", "data.sha256=abc")
    assert list((tmp_path / "datasets/raw").iterdir()) == []


def test_an_unreachable_url_says_how_to_use_a_local_file(tmp_path, http_folder):
    _, base = http_folder
    with pytest.raises(EvalpipeError) as err:
        prepare(tmp_path, f"{base}/missing.json")
    message = str(err.value)
    assert message.startswith(f"cannot download {base}/missing.json (HTTP 404 File not found); ")
    assert "offline, give a local copy with --set data.source=PATH or place it at" in message
    assert "\n" not in message
    with pytest.raises(EvalpipeError, match=r"cannot download http://127.0.0.1:9/d.json "
                                            r"\(ConnectError: "):
        prepare(tmp_path, "http://127.0.0.1:9/d.json")


def test_a_checksum_is_checked_even_when_prepare_is_up_to_date(tmp_path):
    source = write_json(tmp_path / "d.json", make_records(20))
    prepare(tmp_path, source)
    with pytest.raises(DataError, match=r"d.json: SHA-256 is [0-9a-f]{64}, but data.sha256 "
                                        r"expects 00ff"):
        prepare(tmp_path, source, "data.sha256=00ff")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    prepare(tmp_path, source, f"data.sha256={digest.upper()}")  # the pin holds: up to date
