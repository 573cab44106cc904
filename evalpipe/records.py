"""The records that pass between stages (docs/records.md): the item states, the files' names,
a record's content id, and the readers that check what a later stage or compare reads.

Foundation: imports only errors, io and config, so every stage and domain package can use it
without importing another stage.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import DataError, read_json_object, read_jsonl

# The judge's states (docs/records.md). `scored` and `empty` carry a score; the others do not.
STATES = ("scored", "empty", "unparseable", "error")
STATES_WITH_SCORE = ("scored", "empty")

FIELDS = ("instruction", "input", "output")

SCORES = "judge/scores.jsonl"
CANARIES = "judge/canaries.jsonl"
JUDGE_SUMMARY = "judge/summary.json"
FINETUNE_SUMMARY = "finetune/summary.json"
FINETUNE_METRICS = "finetune/metrics.jsonl"
DECIMALS = 4  # floats in summary.json (and in compare's leaderboard.json)

# What the readers below insist on.
FINETUNE_KEYS = ("base_model", "base_test_loss", "base_val_loss", "finetuned_test_loss",
                 "final_val_loss", "best_val_loss", "steps", "tokens_seen", "epochs",
                 "stopped_early", "train_seconds", "parameters")
LOSS_KEYS = ("base_test_loss", "base_val_loss", "finetuned_test_loss", "final_val_loss",
             "best_val_loss")
METRIC_KEYS = ("epoch", "tokens_seen", "train_loss", "val_loss")
JUDGE_KEYS = ("judge", "template", "structured", "options", "repeats")


def check_fields(record: dict, index: int, source: Path, fields, non_empty=()) -> None:
    """One record's string fields: present, strings, and not empty where asked; the error
    names the file, the record's index and the field."""
    for field in fields:
        if field not in record:
            raise DataError(f"{source}: record {index}: field '{field}' is missing")
        value = record[field]
        if not isinstance(value, str):
            raise DataError(f"{source}: record {index}: field '{field}' must be a string, "
                            f"got {type(value).__name__}")
        if field in non_empty and not value.strip():
            raise DataError(f"{source}: record {index}: field '{field}' is empty")


def content_id(record: dict) -> str:
    """12 hex digits of the SHA-256 of the record's three fields: the same example keeps the
    same id across files, splits and runs."""
    text = json.dumps([record[field] for field in FIELDS], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def uses_finetune(config: RunConfig) -> bool:
    """Whether the judged responses came from a model fine-tuned in this run (the same rule as
    generate.needs): only then are there fine-tuning figures to show."""
    return not config.generate.from_file and config.generate.model == "finetuned"


def count_of(n: int, thing: str) -> str:
    """'1 error', '2 errors'."""
    return f"{n} {thing}{'' if n == 1 else 's'}"


# -- reading and checking the inputs ------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_score(where: str, state, score) -> None:
    """A record's state and score must agree (docs/records.md): an integer 0..100 for
    scored/empty, null otherwise."""
    if state not in STATES:
        raise DataError(f"{where}: field 'state' must be one of {', '.join(STATES)}, "
                        f"got {state!r}")
    if state in STATES_WITH_SCORE:
        if not _is_int(score) or not 0 <= score <= 100:
            raise DataError(f"{where}: field 'score' must be an integer 0..100 for state "
                            f"{state!r}, got {score!r}")
    elif score is not None:
        raise DataError(f"{where}: field 'score' must be null for state {state!r}, got {score!r}")


def load_scores(path: Path) -> list[dict]:
    """judge/scores.jsonl, checked field by field; an error names the file, the record's
    index and its id."""
    records = read_jsonl(path)
    seen: set[str] = set()
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        for field in ("id", "instruction", "input", "output", "state", "score"):
            if field not in record:
                raise DataError(f"{where}: field '{field}' is missing")
        if not isinstance(record["id"], str) or not record["id"]:
            raise DataError(f"{where}: field 'id' must be a non-empty string")
        where = f"{path}: record {index} (id {record['id']})"
        if record["id"] in seen:
            raise DataError(f"{where}: the id occurs twice")
        seen.add(record["id"])
        for field in ("instruction", "input", "output"):
            if not isinstance(record[field], str):
                raise DataError(f"{where}: field '{field}' must be a string")
        for field in ("response", "reason"):
            if record.get(field) is not None and not isinstance(record[field], str):
                raise DataError(f"{where}: field '{field}' must be a string or null")
        tokens = record.get("response_tokens")
        if tokens is not None and (not _is_int(tokens) or tokens < 0):
            raise DataError(f"{where}: field 'response_tokens' must be a count or null, "
                            f"got {tokens!r}")
        _check_score(where, record["state"], record["score"])
        repeats = record.get("repeats")
        if repeats is not None:
            if not isinstance(repeats, list) or not all(isinstance(r, dict) for r in repeats):
                raise DataError(f"{where}: field 'repeats' must be a list of objects")
            for number, repeat in enumerate(repeats):
                _check_score(f"{where}: repeat {number}", repeat.get("state"), repeat.get("score"))
    return records


def load_canaries(path: Path) -> list[dict]:
    records = read_jsonl(path)
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if record.get("canary") not in ("good", "bad"):
            raise DataError(f"{where}: field 'canary' must be 'good' or 'bad', "
                            f"got {record.get('canary')!r}")
        for field in ("state", "score"):
            if field not in record:
                raise DataError(f"{where}: field '{field}' is missing")
        _check_score(where, record["state"], record["score"])
    return records


def _require_keys(path: Path, value: dict, keys: tuple[str, ...], what: str = "") -> None:
    for key in keys:
        if key not in value:
            raise DataError(f"{path}: {what}key '{key}' is missing")


def load_judge_summary(path: Path) -> dict:
    summary = read_json_object(path)
    _require_keys(path, summary, JUDGE_KEYS)
    if not isinstance(summary["judge"], dict):
        raise DataError(f"{path}: key 'judge' must be an object (backend, model, digest)")
    return summary


def load_finetune_summary(path: Path) -> dict:
    summary = read_json_object(path)
    _require_keys(path, summary, FINETUNE_KEYS)
    for key in LOSS_KEYS:  # drawn and correlated with scores, so they must be numbers
        value = summary[key]
        if value is not None and not _is_number(value):
            raise DataError(f"{path}: key '{key}' must be a number, got {value!r}")
    return summary


def load_metrics(path: Path) -> list[dict]:
    metrics = read_jsonl(path)
    for index, record in enumerate(metrics):
        _require_keys(path, record, METRIC_KEYS, f"record {index}: ")
    return metrics


# -- the same test items in every run (compare, together judging) ------------------------------

class CompareError(EvalpipeError):
    """Runs that cannot be compared; the message names the runs, the item and the field."""


def _short(text, limit: int = 40) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _item_key(record: dict) -> tuple[str, str, str]:
    return tuple(record[name] for name in FIELDS)


def check_same_test_items(runs: list[tuple[str, list[dict]]]) -> None:
    """Refuse runs, given as (label, records), whose test items differ from the first run's,
    naming the first difference: the two runs, the item's index and ids, the field, and both
    values shortened. The same items in another order are named as such."""
    (first, a_records), *others = runs
    for other, b_records in others:
        if len(a_records) != len(b_records):
            raise CompareError(
                f"runs {first} and {other} do not share a test split: "
                f"{first} has {len(a_records)} items, {other} has {len(b_records)}")
        for index, (a, b) in enumerate(zip(a_records, b_records)):
            for name in FIELDS:
                if a[name] != b[name]:
                    reordered = (Counter(map(_item_key, a_records))
                                 == Counter(map(_item_key, b_records)))
                    what = ("hold the same items in another order; the first difference is"
                            if reordered else "differ")
                    raise CompareError(
                        f"runs {first} and {other} {what} at item {index} "
                        f"(ids {a['id']} and {b['id']}), field {name}: "
                        f"{_short(a[name])} against {_short(b[name])}")
