"""The judgment cache: raw judge replies in SQLite, keyed by everything that decides them.

Shared by every run in a results folder (results/judge-cache.sqlite), by single and together
judging, and by threads and processes. A reply is stored with the prompt token count the server
reported, so that a cached reply is checked for truncation as a fresh one is, and with its
log-probabilities when they were asked for, so that an expected score is recomputed from the
cache exactly; errors and truncated replies are never stored.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import sha256_json

CACHE_NAME = "judge-cache.sqlite"


def cache_key(identity, prompt: str, options: dict, schema: dict | None,
              top_logprobs: int = 0) -> str:
    """SHA-256 of everything that decides the judge's reply. The server's address is not in
    it: the same model (by digest) answers the same wherever it runs. `top_logprobs` (a
    request for log-probabilities) is in it only when asked, so that the keys of replies
    stored before it existed stay the same."""
    fields = {"backend": identity.backend, "digest": identity.digest,
              "prompt": prompt, "options": options, "schema": schema}
    if top_logprobs:
        fields["top_logprobs"] = top_logprobs
    return sha256_json(fields)


class JudgmentCache:
    """Raw judge replies in SQLite, shared by runs and by threads (one connection, a lock;
    WAL so that several evalpipe processes can use one file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, "
                             "raw TEXT NOT NULL, backend TEXT, model TEXT, created TEXT)")
            # What the truncation check reads (prompt_tokens, context: see backends.Reply);
            # `checked` is 0 for replies stored before they were kept: such a reply cannot be
            # checked, so it is asked again.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
            # `logprobs` (JSON, see backends.Reply) is what an expected score is computed
            # from; NULL when not asked for or not sent.
            for column, kind in (("prompt_tokens", "INTEGER"), ("context", "INTEGER"),
                                 ("checked", "INTEGER NOT NULL DEFAULT 0"),
                                 ("logprobs", "TEXT")):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE replies ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as err:
            raise EvalpipeError(f"judgment cache {self.path}: {err}; delete it or set "
                                "judge.cache to another file") from None

    def get(self, key: str):
        """The stored `backends.Reply` to the request of `key`, or None."""
        from evalpipe.judging.backends import Reply

        with self._lock:
            row = self._db.execute("SELECT raw, prompt_tokens, context, logprobs FROM replies "
                                   "WHERE key = ? AND checked = 1", (key,)).fetchone()
        if not row:
            return None
        raw, prompt_tokens, context, logprobs = row
        return Reply(raw, prompt_tokens, context,
                     None if logprobs is None else json.loads(logprobs))

    def put(self, key: str, reply, identity) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, raw, backend, model, created, "
                "prompt_tokens, context, checked, logprobs) "
                "VALUES (?, ?, ?, ?, datetime('now'), ?, ?, 1, ?)",
                (key, reply.text, identity.backend, identity.model, reply.prompt_tokens,
                 reply.context, None if reply.logprobs is None else json.dumps(reply.logprobs)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache_path(config: RunConfig, results: Path) -> Path:
    """judge.cache, else the cache shared by every run in the results folder `results`."""
    return Path(config.judge.cache).expanduser() if config.judge.cache else (
        Path(results) / CACHE_NAME)
