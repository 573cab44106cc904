"""Stage 1, prepare: read the instruction data, validate it, give every record an id, split it.

Reads `data.source` (a URL, downloaded once into datasets/raw/, or a local JSON/JSONL file) and
writes results/<run>/prepare/{train,val,test}.jsonl and report.json (counts, exact duplicates,
and validation or test records whose instruction+input also occur in the training split).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

from evalpipe.config import ConfigError, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import (
    DataError,
    atomic_open,
    read_records,
    sha256_file,
    write_json,
    write_jsonl,
)
from evalpipe.paths import RunPaths
from evalpipe.records import FIELDS, check_fields, content_id

NON_EMPTY = ("instruction", "output")
SPLITS = ("train", "val", "test")


# -- the stage contract (evalpipe/stages/contract.py) -------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    return ()


def config_key(config: RunConfig) -> dict:
    # The source's content is hashed as an input, so where it lives (URL or path) and the
    # optional checksum do not decide anything by themselves. No split uses the prompt
    # template (finetune and generate key on it), and only the shuffle uses the seed.
    unused = {"source", "sha256", "template"}
    if config.data.split != "shuffle":
        unused.add("seed")
    data = config.section("data")
    return {key: value for key, value in data.items() if key not in unused}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    return {"source": source_path(config, paths)}


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("train.jsonl", "val.jsonl", "test.jsonl", "report.json")


def fetch(config: RunConfig, paths: RunPaths) -> None:
    """Make the source local and check its pin. This runs before every cache decision, so a
    data.sha256 that the file does not match fails even when prepare is up to date."""
    source, path = config.data.source, source_path(config, paths)
    if is_url(source):
        download(source, path)
    elif not path.exists():
        raise DataError(f"data.source: file not found: {path}")
    try:
        check_sha256(path, config.data.sha256)
    except DataError:
        if is_url(source):
            path.unlink()  # never keep a download that fails its checksum: fetch it again
        raise


def run(config: RunConfig, paths: RunPaths) -> None:
    source = source_path(config, paths)
    records = with_ids(validate(read_records(source), source))
    splits = split(records, config.data)
    out = paths.stage_dir("prepare")
    for name in SPLITS:
        write_jsonl(out / f"{name}.jsonl", splits[name])
    write_json(out / "report.json", report(splits, source))
    print(
        f"prepare: {len(records)} records -> "
        + ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
    )


# -- the source ---------------------------------------------------------------------------------

# "scheme://": a source written as a URL, even with a scheme this stage does not download.
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
HOST = re.compile(r"[\w.-]+|[0-9A-Fa-f:.]+")  # a name (IDN too) or an IP address (v4 or v6)


def is_url(source: str) -> bool:
    """Whether data.source is a URL to download rather than a local path. A source written as
    a URL that is not a valid http(s) URL is an error naming it: taken for a path, "htp://x"
    would only fail as a missing file, and httpx would fail on "https://" with a traceback."""
    parsed = urlparse(source)
    if not (URL_LIKE.match(source) or parsed.scheme in ("http", "https")):
        return False
    try:
        port_ok = parsed.port is None or parsed.port > 0  # .port raises for "x:99999", "x:a"
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("http", "https"):
        why = "only http:// and https:// URLs are downloaded"
    elif not parsed.hostname or not HOST.fullmatch(parsed.hostname):
        why = "no valid host name"
    elif not port_ok:
        why = "no valid port"
    else:
        return True
    raise ConfigError(f"data.source: {source!r} is not a valid URL ({why}); give an http(s) "
                      f"URL or a local path")


def source_path(config: RunConfig, paths: RunPaths) -> Path:
    """Where the source file is on disk: the local path, or the download cache for a URL."""
    source = config.data.source
    if is_url(source):
        name = Path(urlparse(source).path).name or "data.json"
        url_hash = hashlib.sha256(source.encode()).hexdigest()[:8]
        return paths.datasets / "raw" / f"{url_hash}-{name}"
    return Path(source).expanduser()


def download(url: str, target: Path) -> None:
    """Download `url` to `target` once (with a progress bar); a later call finds it there."""
    if target.exists():
        return
    import httpx
    from tqdm import tqdm

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with atomic_open(target, "wb") as handle, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {target.name}"
            ) as progress:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    progress.update(len(chunk))
    except httpx.HTTPError as err:
        if isinstance(err, httpx.HTTPStatusError):
            why = f"HTTP {err.response.status_code} {err.response.reason_phrase}"
        else:
            why = f"{type(err).__name__}: {err}"
        raise EvalpipeError(
            f"cannot download {url} ({why}); offline, give a local copy "
            f"with --set data.source=PATH or place it at {target}"
        ) from None


def check_sha256(path: Path, expected: str) -> None:
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DataError(f"{path}: SHA-256 is {actual}, but data.sha256 expects {expected}")


# -- records ------------------------------------------------------------------------------------

def validate(records: list[dict], source: Path) -> list[dict]:
    """Every record needs instruction, input and output as strings; instruction and output
    must not be empty. The first bad record stops the stage before anything is written."""
    if not records:
        raise DataError(f"{source}: no records")
    for index, record in enumerate(records):
        check_fields(record, index, source, FIELDS, non_empty=NON_EMPTY)
    return [{field: record[field] for field in FIELDS} for record in records]


def with_ids(records: list[dict]) -> list[dict]:
    """Prefix each record with its id; exact duplicates get -2, -3, ... in file order, so that
    ids stay unique and every later join by id is one to one."""
    seen: dict[str, int] = defaultdict(int)
    result = []
    for record in records:
        base = content_id(record)
        seen[base] += 1
        record_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        result.append({"id": record_id, **record})
    return result


def split(records: list[dict], data) -> dict[str, list[dict]]:
    """The book's split: first 85% train, next 10% test, the rest validation, in file order
    (935 / 110 / 55 for the book's 1,100 records), or after a seeded shuffle."""
    records = list(records)
    if data.split == "shuffle":
        random.Random(data.seed).shuffle(records)
    train_count = int(len(records) * data.train_fraction)
    test_count = int(len(records) * data.test_fraction)
    return {
        "train": records[:train_count],
        "test": records[train_count:train_count + test_count],
        "val": records[train_count + test_count:],
    }


def report(splits: dict[str, list[dict]], source: Path) -> dict:
    everything = [record for name in SPLITS for record in splits[name]]
    groups: dict[str, list[str]] = defaultdict(list)
    for record in everything:
        groups[record["id"].split("-")[0]].append(record["id"])
    duplicates = [ids for ids in groups.values() if len(ids) > 1]

    def prompt_key(record: dict) -> tuple[str, str]:
        return record["instruction"].strip(), record["input"].strip()

    train_prompts = {prompt_key(record) for record in splits["train"]}
    leakage = {
        name: [record["id"] for record in splits[name] if prompt_key(record) in train_prompts]
        for name in ("val", "test")
    }
    return {
        "source": str(source),
        "source_sha256": sha256_file(source),
        "counts": {"total": len(everything), **{name: len(splits[name]) for name in SPLITS}},
        "duplicates": duplicates,
        "leakage": leakage,
    }
