"""Files: atomic writes, JSONL reading with clear errors, content hashes.

Every finished output is written to a temporary file in the same folder and renamed into place,
so a killed stage never leaves a file that looks finished. Work in progress that must survive a
kill (generated responses, judgments) goes to an append-only `*.partial.jsonl` file instead, one
flushed line per finished record, and is folded into the final file at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from evalpipe.errors import EvalpipeError


class DataError(EvalpipeError):
    """Input data that cannot be used; the message names the file and the record."""



def _read_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which is not safe
    # while other threads create files.
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` for a writer that wants a file name (safetensors'
    save_file); on success it is synced and replaces `path` in one rename, on failure it is
    removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); a result is an ordinary file (0666 - umask).
        os.chmod(tmp_name, 0o666 & ~UMASK)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp_path, open(tmp_path, mode, encoding=encoding) as handle:
        yield handle


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a bad line is an error naming the file and the line number."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number}: expected a JSON object")
            records.append(record)
    return records


def read_json_object(path: str | Path) -> dict:
    """A JSON file holding one object; a missing, broken or other file is a one-line
    DataError naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def read_records(path: str | Path) -> list[dict]:
    """Read a JSON list of objects or a JSONL file (decided by content, not by the name)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from None
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"{path}: record {index}: expected a JSON object")
        return records
    return read_jsonl(path)


def read_partial_jsonl(path: str | Path) -> list[dict]:
    """Read an append-only progress file, dropping a last line cut short by a kill.

    Every line is written whole with its newline, so only a last line without one can be
    incomplete, cut anywhere, even inside a multi-byte character; it is dropped, as
    JsonlAppender cuts it. A bad line anywhere else is real corruption and raises, naming the
    line. Lines are split at b"\n" alone: JSON text may hold U+2028 or U+0085 unescaped,
    where str.splitlines would also split.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    torn = lines.pop()  # b"" after a final newline, else the line a kill cut short
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(_partial_record(line, path, number))
    if torn.strip():
        try:
            records.append(_partial_record(torn, path, len(lines) + 1))
        except DataError:
            pass  # the line being written when the run was killed
    return records


def _partial_record(line: bytes, path: Path, number: int) -> dict:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: line {number}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {number}: expected a JSON object")
    return record


class JsonlAppender:
    """Append records to a progress file, each line flushed to disk as soon as it is written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        # A kill mid-write leaves a last line without its newline; cut it so the next
        # record starts on a line of its own.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of a JSON-able value, independent of dict order."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_remembered_sha256: dict[tuple[str, int, int], str] = {}


def sha256_file_remembered(path: str | Path) -> str:
    """sha256_file, computed once per process for each (path, size, mtime): a model file of
    gigabytes is read once, however many stages or backends ask. A file rewritten meanwhile
    has another size or mtime, and is hashed again. Safe from any thread without a lock (one
    dict read, one dict write); two threads asking at once may both hash the file, which
    costs time, not correctness."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _remembered_sha256:
        _remembered_sha256[key] = sha256_file(path)
    return _remembered_sha256[key]
