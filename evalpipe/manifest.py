"""What a manifest records besides hashes: identity values (a served model's digest, a prompt's
hash), compared when deciding whether outputs are up to date. Used by the stage cache
(evalpipe/stages/pipeline.py) and by together judging, which keeps a manifest of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Unchecked:
    """An identity value a stage cannot find out now (its server is down): never compared, and
    the status says why it was not checked."""

    reason: str


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _shown(value: Any) -> str:
    """An identity value in a status line; a SHA-256 by its first 12 hex digits, as `ollama
    list` shows a model's digest."""
    if value is None:
        return "not recorded"
    if isinstance(value, str) and SHA256_HEX.fullmatch(value):
        return value[:12]
    return str(value)


def identity_changes(recorded: dict, current: dict) -> tuple[list[str], list[str]]:
    """(what changed, what was not checked), one phrase each, comparing a manifest's recorded
    identity values with the current ones (`Stage.identity`)."""
    changed, unchecked = [], []
    for key, value in current.items():
        if isinstance(value, Unchecked):
            unchecked.append(f"{key} not checked: {value.reason}")
        elif recorded.get(key) != value:
            changed.append(f"{key} changed: {_shown(recorded.get(key))} -> {_shown(value)}")
    return changed, unchecked


def recorded_identity(current: dict) -> dict:
    """The identity values a manifest records: an unchecked one as null, so that it counts as
    changed once it can be checked."""
    return {key: None if isinstance(value, Unchecked) else value
            for key, value in current.items()}
