"""Stage 4, judge: an LLM scores every response, completely and reproducibly.

For every record of generate/responses.jsonl the judge prompt (evalpipe/judging/prompts.py) is sent to
the judge backend (evalpipe/judging/backends.py) and the reply is parsed into a score. Every item ends
in exactly one state, none is dropped:
  scored       the reply held a valid score
  empty        the response was empty or missing: score 0, the judge is not asked (the book's rule)
  unparseable  the reply held no valid score; the raw reply is kept
  error        the request failed for good (after retries on transient errors); message kept

What keeps the scores cheap to redo, safe to interrupt and never quietly stale:
- the judgment cache (SQLite, shared by every run under results/): the raw reply to a request,
  keyed by the SHA-256 of backend, model digest, rendered prompt, options and schema, with the
  prompt token count the server reported. Same settings, same model: the judge is not asked
  again. Replies are parsed and checked for truncation on every run, so a new rule re-reads
  cached replies without asking. Errors and truncated replies are never cached.
- judge/scores.partial.jsonl: each finished record is appended and flushed at once, tagged
  with a run key, so Ctrl-C or a crash loses no finished judgment and a rerun only asks for
  what is missing. Records in state `error` are not finished: a rerun asks again.
- the stage's manifest (evalpipe/stages/pipeline.py, the hooks `identity` and `incomplete`): the
  stage is stale when the served model's digest, the prompt text or the parsing rule's version
  changed, and incomplete while judgments ended in error, so the next run asks for them.
- canaries: a few known answers (the reference output as the response: should score high;
  an empty-looking reply such as 'N/A': should score near 0), judged exactly like the items and
  reported apart, to flag a judge that is not reading.

The pieces a judge of several runs at once ("together" mode, evalpipe/judging/together.py) reuses:
`open_judge` (preflight + cache + backend), `Judge.ask` (cache, retries, timing),
`read_responses`, `judge_fields` (the record layout of docs/records.md), and the loop that
asks and writes down: `answering` (the thread pool), `resume` and `write_down` (the partial
file, the progress bar).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from evalpipe import stats
from evalpipe.config import JudgeConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import (
    DataError,
    JsonlAppender,
    read_json_object,
    read_jsonl,
    read_partial_jsonl,
    sha256_file,
    sha256_file_remembered,
    sha256_json,
    write_json,
    write_jsonl,
)
from evalpipe.judging import prompts
from evalpipe.judging.prompts import parse_reply, render, schema, template_sha256
from evalpipe.manifest import Unchecked
from evalpipe.paths import RunPaths
from evalpipe.records import count_of

SCORES = "scores.jsonl"
CANARIES = "canaries.jsonl"
SUMMARY = "summary.json"
PARTIAL = "scores.partial.jsonl"
CACHE_NAME = "judge-cache.sqlite"
CANARY_ITEMS = 5  # canaries are made from the first min(5, n) test items

# Backoff before retry number r (0-based) is RETRY_BASE_DELAY * 2**r seconds, at most
# RETRY_MAX_DELAY. Tests make it small through EVALPIPE_JUDGE_RETRY_DELAY.
RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


# -- the stage's contract with the cache ------------------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    return ("generate",)


def config_key(config: RunConfig) -> dict:
    # How fast and where the judge is asked does not change its answers; mode and swap are
    # together mode's (evalpipe/judging/together.py), which this stage refuses.
    ignored = ("concurrency", "timeout", "retries", "cache", "hosts", "host", "api_key",
               "mode", "swap")
    return {k: v for k, v in config.section("judge").items() if k not in ignored}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    return {"generate/responses.jsonl": paths / "generate/responses.jsonl"}


def outputs(config: RunConfig) -> tuple[str, ...]:
    return (SCORES, CANARIES, SUMMARY)


def identity(config: RunConfig, paths: RunPaths) -> dict:
    """What decides the scores besides the settings and the responses (the stage cache's
    identity hook): the served model's digest, the prompt text, the parsing rule."""
    return {"digest": served_digest(config.judge), **rules(config.judge)}


def rules(settings: JudgeConfig) -> dict:
    """The code that decides the scores: a hash of the prompt text, the parsing rule's version."""
    return {"prompt_template": template_sha256(settings.template, settings.structured),
            "parse_rule": prompts.PARSE_RULE_VERSION}


IDENTITY_TIMEOUT = 10.0  # seconds: `status` asks the judge server for its digest


def served_digest(settings: JudgeConfig) -> str | Unchecked:
    """The digest of the model the judge server serves now, as preflight reads it (Ollama:
    one GET /api/tags); Unchecked when the server cannot tell (down, or without the model).
    The llamacpp backend's digest is its GGUF file's SHA-256, read without loading it."""
    from evalpipe.judging.backends import JudgeError, make_backend

    if settings.backend == "llamacpp":
        path = Path(settings.model).expanduser()
        if not path.is_file():
            return Unchecked(f"GGUF file not found: {path}")
        return sha256_file_remembered(path)
    quick = dataclasses.replace(settings, timeout=min(settings.timeout, IDENTITY_TIMEOUT))
    try:
        backend = make_backend(quick)
        try:
            return backend.preflight().digest
        finally:
            backend.close()
    except JudgeError as err:
        return Unchecked(f"judge server unreachable ({err})")


def incomplete(config: RunConfig, paths: RunPaths) -> str | None:
    """After a run: the judgments that ended in error (the stage cache's incomplete hook); the
    next run asks for them again."""
    errors = read_json_object(paths.stage_dir("judge") / SUMMARY).get("errors", 0)
    return count_of(errors, "error") if errors else None


# -- the judgment cache -------------------------------------------------------------------------

def cache_key(identity, prompt: str, options: dict, schema: dict | None) -> str:
    """SHA-256 of everything that decides the judge's reply. The server's address is not in
    it: the same model (by digest) answers the same wherever it runs."""
    return sha256_json({"backend": identity.backend, "digest": identity.digest,
                        "prompt": prompt, "options": options, "schema": schema})


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
            for column, kind in (("prompt_tokens", "INTEGER"), ("context", "INTEGER"),
                                 ("checked", "INTEGER NOT NULL DEFAULT 0")):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE replies ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as err:
            raise EvalpipeError(f"judgment cache {self.path}: {err}; delete it or set "
                                "judge.cache to another file") from None

    def get(self, key: str):
        """The stored `backends.Reply` to the request of `key`, or None."""
        from evalpipe.judging.backends import Reply

        with self._lock:
            row = self._db.execute("SELECT raw, prompt_tokens, context FROM replies "
                                   "WHERE key = ? AND checked = 1", (key,)).fetchone()
        return Reply(*row) if row else None

    def put(self, key: str, reply, identity) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, raw, backend, model, created, "
                "prompt_tokens, context, checked) VALUES (?, ?, ?, ?, datetime('now'), ?, ?, 1)",
                (key, reply.text, identity.backend, identity.model, reply.prompt_tokens,
                 reply.context))

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


# -- prompt sizes: the judge's context ----------------------------------------------------------
#
# The judge's tokens cannot be counted here (its tokenizer lives on the server), so two
# estimates bound them (docs/judge.md, "Prompt sizes"). Above: English runs about 4 characters
# to a token (OpenAI's rule of thumb; Llama 3's larger vocabulary does better), so UTF-8 bytes / 3
# plus the chat template's tokens leaves a margin of about a third. Below: every tokenizer in
# use (byte-level BPE, SentencePiece) splits text at whitespace before merging, so each
# whitespace-separated word is at least one token.
BYTES_PER_TOKEN = 3
TEMPLATE_TOKENS = 32  # the chat template's tokens around the one user message
REPLY_TOKENS = 512  # room kept for the reply when judge.options sets no num_predict
OLLAMA_DEFAULT_NUM_CTX = 2048  # Ollama's context when a request sends no num_ctx


def estimate_tokens(prompt: str) -> int:
    """A generous estimate of the judge tokens `prompt` takes, chat template included."""
    return -(-len(prompt.encode()) // BYTES_PER_TOKEN) + TEMPLATE_TOKENS


def fewest_tokens(prompt: str) -> int:
    """At least this many tokens: one per whitespace-separated word."""
    return len(prompt.split())


def sized_options(judge: "Judge", prompt: str, options: dict, what: str) -> dict:
    """The options to send `prompt` with: as given when the estimated prompt and the room for
    the reply fit in num_ctx (2048 when not set) or the backend's context cannot be known
    (OpenAI-style servers); else num_ctx doubled until they fit, up to the model's context
    length (Ollama). When even that is too small: EvalpipeError naming `what` (the item) and
    the sizes, before anything is sent."""
    limit = judge.backend.max_context
    if limit is None:
        return options
    prompt_size = estimate_tokens(prompt)
    reply_size = int(options.get("num_predict", options.get("max_tokens", REPLY_TOKENS)))
    if reply_size < 0:  # Ollama's -1: no limit
        reply_size = REPLY_TOKENS
    needed = prompt_size + reply_size
    num_ctx = int(options.get("num_ctx") or OLLAMA_DEFAULT_NUM_CTX)
    if needed <= min(num_ctx, limit):  # Ollama caps num_ctx at the model's context length
        return options
    if needed > limit:
        raise EvalpipeError(
            f"judge: {what}: the prompt needs a context of about {needed} tokens ({prompt_size} "
            f"for the prompt, estimated from {len(prompt.encode())} bytes, {reply_size} for the "
            f"reply), but judge.options.num_ctx is {num_ctx} and the judge "
            f"{judge.identity.model} takes at most {limit}")
    while num_ctx < needed:
        num_ctx *= 2
    return {**options, "num_ctx": min(num_ctx, limit)}


def truncation(prompt: str, reply) -> str | None:
    """Why the judge did not read all of `prompt`, going by the prompt token count the server
    reported with `reply` (a backends.Reply); None when nothing says so (or no count came).
    Ollama cuts a prompt longer than num_ctx without a word and reports the tokens it kept:
    num_ctx / 2 + 2 (0.6 and later) or num_ctx (older runners). So: fewer tokens than the
    prompt has words, or the whole context, is a truncated prompt."""
    if reply.prompt_tokens is None:
        return None
    words = fewest_tokens(prompt)
    if reply.prompt_tokens < words:
        return (f"prompt truncated: the judge read {reply.prompt_tokens} tokens of a prompt of "
                f"{words} words (num_ctx {reply.context or 'not sent'})")
    if reply.context is not None and reply.prompt_tokens >= reply.context:
        return (f"prompt truncated: the judge read {reply.prompt_tokens} tokens, its whole "
                f"context (num_ctx {reply.context}), leaving no room for the reply")
    return None


# -- asking: cache, backend, retries ------------------------------------------------------------

@dataclass
class Answer:
    """The outcome of one request: a raw reply (from the judge or the cache) or an error."""

    raw: str | None
    error: str | None
    seconds: float  # wall time including retries; 0 when answered from the cache
    cached: bool


@dataclass
class Judgment:
    """One parsed judgment of one prompt."""

    state: str  # scored, unparseable or error (empty is decided before asking)
    score: int | None
    reason: str | None
    raw: str | None
    error: str | None
    seconds: float
    cached: bool


# The judgment of an empty response: score 0, the judge is not asked (the book's rule).
EMPTY = Judgment("empty", 0, None, None, None, 0.0, False)


def retry_base_delay() -> float:
    return float(os.environ.get("EVALPIPE_JUDGE_RETRY_DELAY", RETRY_BASE_DELAY))


class Judge:
    """A preflighted backend with its cache: asks one prompt at a time, from any thread."""

    def __init__(self, backend, identity, cache: JudgmentCache, *, retries: int):
        self.backend = backend
        self.identity = identity
        self.cache = cache
        self.retries = retries
        # Set when the caller stops (Ctrl-C, an error): a request that failed transiently is
        # then not retried, so the process ends without waiting out the backoff.
        self.stopping = threading.Event()

    def ask(self, prompt: str, options: dict, schema: dict | None = None) -> Answer:
        """The judge's raw reply to `prompt`: from the cache if it was asked before, else from
        the backend, retrying transient failures with exponential backoff. A reply whose
        prompt token count says the prompt was cut (`truncation`) is an error, never cached."""
        from evalpipe.judging.backends import (
            JudgeError,
            JudgeRequest,
            TransientJudgeError,
        )

        key = cache_key(self.identity, prompt, options, schema)
        reply = self.cache.get(key)
        if reply is not None and truncation(prompt, reply) is None:
            return Answer(reply.text, None, 0.0, True)
        clock = time.monotonic()
        request = JudgeRequest(prompt=prompt, options=dict(options), schema=schema)
        for attempt in range(self.retries + 1):
            try:
                reply = self.backend.ask(request)
                break
            except TransientJudgeError as err:
                if attempt == self.retries:
                    return Answer(None, f"{err} (after {attempt + 1} attempts)",
                                  round(time.monotonic() - clock, 3), False)
                if self.stopping.wait(min(retry_base_delay() * 2 ** attempt, RETRY_MAX_DELAY)):
                    return Answer(None, f"{err} (stopped before retrying)",
                                  round(time.monotonic() - clock, 3), False)
            except JudgeError as err:
                return Answer(None, str(err), round(time.monotonic() - clock, 3), False)
        seconds = round(time.monotonic() - clock, 3)
        truncated = truncation(prompt, reply)
        if truncated is not None:  # not cached: a rerun asks again
            return Answer(None, truncated, seconds, False)
        self.cache.put(key, reply, self.identity)
        return Answer(reply.text, None, seconds, False)


def judge_prompt(judge: Judge, template: str, structured: bool, prompt: str,
                 options: dict) -> Judgment:
    """Ask `prompt` (rendered with `template`) and parse the reply."""
    answer = judge.ask(prompt, options, schema(template) if structured else None)
    if answer.error is not None:
        return Judgment("error", None, None, None, answer.error, answer.seconds, answer.cached)
    parsed = parse_reply(template, structured, answer.raw)
    return Judgment(parsed.state, parsed.score, parsed.reason, answer.raw, None,
                    answer.seconds, answer.cached)


@contextmanager
def open_judge(config: RunConfig, results: Path) -> Iterator[Judge]:
    """Preflight the backend and open the judgment cache (`cache_path(config, results)`). A
    failed preflight is one line saying what to run; nothing else has happened yet."""
    from evalpipe.judging.backends import JudgeError, make_backend

    backend = make_backend(config.judge)
    try:
        try:
            identity = backend.preflight()
        except JudgeError as err:
            raise EvalpipeError(f"judge: {err}") from None
        cache = JudgmentCache(cache_path(config, results))
        try:
            yield Judge(backend, identity, cache, retries=config.judge.retries)
        finally:
            cache.close()
    finally:
        backend.close()


DEFAULT_SEED = 123  # when judge.options has no seed


def base_seed(settings: JudgeConfig) -> int:
    """judge.options' seed, the first of the repeats' seeds and of together mode's shuffles."""
    return int(settings.options.get("seed", DEFAULT_SEED))


def repeat_options(settings: JudgeConfig, repeat: int) -> dict:
    """The options of repeat number `repeat` (0-based): judge.options with seed + repeat.
    A single judgment sends the options as configured."""
    options = dict(settings.options)
    if settings.repeats > 1:
        options["seed"] = base_seed(settings) + repeat
    return options


def seeds_of(settings: JudgeConfig) -> list:
    """The seed each of the judge.repeats requests is sent with (None: no seed sent)."""
    return [repeat_options(settings, r).get("seed") for r in range(settings.repeats)]


def prompt_hash(prompt: str) -> str:
    """A record's `prompt_sha256`: the SHA-256 of the prompt sent, UTF-8."""
    return hashlib.sha256(prompt.encode()).hexdigest()


# -- the stage ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One record to judge: a test item, or a canary made from one."""

    key: str  # the item's id, or "canary:good:<id>" / "canary:bad:<id>"
    record: dict  # what is rendered: instruction, input, output, response


def is_empty(response: str | None) -> bool:
    return response is None or not response.strip()


# Replies that look like an answer but say nothing: a judge that reads scores them near 0.
EMPTY_LOOKING = ("N/A", "...", "I don't know.", "None", "### Response:")


def make_canaries(items: list[dict]) -> list[Job]:
    """For the first min(5, n) items: the reference output as the response (good), and an
    empty-looking reply (bad; EMPTY_LOOKING in turn). Both flag a judge that is not reading:
    it would give the two kinds alike."""
    jobs = []
    for index, item in enumerate(items[:CANARY_ITEMS]):
        base = {key: item[key] for key in ("instruction", "input", "output")}
        jobs.append(Job(f"canary:good:{item['id']}",
                        {"canary": "good", "item_id": item["id"], **base,
                         "response": item["output"]}))
        jobs.append(Job(f"canary:bad:{item['id']}",
                        {"canary": "bad", "item_id": item["id"], **base,
                         "response": EMPTY_LOOKING[index % len(EMPTY_LOOKING)]}))
    return jobs


def judge_fields(settings: JudgeConfig, identity, judgments: list[Judgment],
                 prompt_sha256: str | None) -> dict:
    """The fields the judge adds to a record (docs/records.md; this is the one place that
    lays them out): `judgments` holds one Judgment per repeat (`[EMPTY] * repeats` for an
    empty response, which is not asked), `prompt_sha256` the hash of the prompt sent (None
    when none was)."""
    first = judgments[0]
    fields = {
        "state": first.state, "score": first.score, "reason": first.reason,
        "raw_reply": first.raw, "error": first.error,
        "judge_backend": identity.backend, "judge_model": identity.model,
        "judge_digest": identity.digest, "judge_template": settings.template,
        "prompt_sha256": prompt_sha256,
        "judge_seconds": first.seconds, "cached": first.cached,
    }
    if settings.repeats > 1:
        fields["repeats"] = [{"seed": seed, "state": j.state, "score": j.score,
                              "raw_reply": j.raw} for seed, j in zip(seeds_of(settings),
                                                                     judgments)]
    return fields


def read_responses(path: Path) -> list[dict]:
    """A run's generate/responses.jsonl, every record checked for what the judge reads: the
    fields id, instruction, input, output and response, the response a string or null."""
    records = read_jsonl(path)
    for index, record in enumerate(records):
        for field in ("id", "instruction", "input", "output", "response"):
            if field not in record:
                raise DataError(f"{path}: record {index}: field '{field}' is missing")
        if not isinstance(record["response"], (str, type(None))):
            raise DataError(f"{path}: record {index}: field 'response' must be a string or "
                            f"null, got {type(record['response']).__name__}")
    return records


def run(config: RunConfig, paths: RunPaths) -> None:
    settings = config.judge
    if settings.mode == "together":
        raise EvalpipeError("judge.mode = 'together' judges several runs at once: "
                            "use 'evalpipe compare'")
    responses_path = paths / "generate/responses.jsonl"
    items = read_responses(responses_path)
    out = paths.stage_dir("judge")
    clock = time.monotonic()

    with open_judge(config, paths.results) as judge:
        identity = judge.identity
        # A partial record counts only if it was made from the same responses, by the same
        # judge model, with the same settings, prompt text and parsing rule.
        run_key = sha256_json({"config": config_key(config), "judge": asdict(identity),
                               "rules": rules(settings),
                               "responses": sha256_file(responses_path)})
        jobs = [Job(item["id"], item) for item in items]
        if settings.canaries:
            jobs += make_canaries(items)
        done = resume(out / PARTIAL, run_key, total=len(jobs), name="judge")
        for job in jobs:
            if job.key not in done and is_empty(job.record["response"]):
                done[job.key] = {**job.record, **judge_fields(
                    settings, identity, [EMPTY] * settings.repeats, None)}
        todo = [job for job in jobs if job.key not in done]
        _judge_jobs(judge, settings, todo, done, out / PARTIAL, run_key, total=len(jobs))

    scored = [done[item["id"]] for item in items]
    canaries = [done[job.key] for job in jobs[len(items):]]
    summary = make_summary(settings, identity, scored, canaries,
                           seconds=round(time.monotonic() - clock, 3))
    write_jsonl(out / SCORES, scored)
    write_jsonl(out / CANARIES, canaries)
    write_json(out / SUMMARY, summary)
    (out / PARTIAL).unlink(missing_ok=True)
    print(summary_line(summary))
    errors = [r for r in scored if r["state"] == "error"]
    if errors:
        print(f"judge: {len(errors)} items ended in error (first: id {errors[0]['id']}: "
              f"{errors[0]['error']}); the judge is incomplete: 'evalpipe judge' asks for "
              "them again, the rest comes from the judgment cache")


def _judge_jobs(judge: Judge, settings: JudgeConfig, todo: list[Job], done: dict[str, dict],
                partial_path: Path, run_key: str, *, total: int) -> None:
    """Ask every request of `todo` (a job has judge.repeats requests), judge.concurrency at a
    time; each job's record is written down as soon as all its requests are back."""
    prompts = {job.key: render(settings.template, job.record, structured=settings.structured)
               for job in todo}
    calls = [((job.key, repeat), judge_prompt, judge, settings.template, settings.structured,
              prompts[job.key], sized_options(judge, prompts[job.key],
                                              repeat_options(settings, repeat),
                                              f"item {job.key}"))
             for job in todo for repeat in range(settings.repeats)]

    def whole_records(answers: Iterable[tuple[tuple[str, int], Judgment]]):
        pending: dict[str, list[Judgment | None]] = {job.key: [None] * settings.repeats
                                                     for job in todo}
        by_key = {job.key: job for job in todo}
        for (key, repeat), judgment in answers:
            pending[key][repeat] = judgment
            if all(j is not None for j in pending[key]):
                yield key, {**by_key[key].record, **judge_fields(
                    settings, judge.identity, pending.pop(key), prompt_hash(prompts[key]))}

    with answering(calls, settings.concurrency, "judge", judge.stopping) as answers:
        write_down(whole_records(answers), done, partial_path, run_key, total=total,
                   name="judge")


# -- running requests, writing down what comes back (the judge stage and together mode) ------

@contextmanager
def answering(calls: Iterable[tuple], concurrency: int, name: str,
              stopping: threading.Event | None = None) -> Iterator[Iterator[tuple[Any, Any]]]:
    """Run each call `(tag, function, *args)` on `concurrency` threads; the context gives an
    iterator of `(tag, result)` in the order the calls finish, so that the caller (one
    thread) writes results down as they come.

    On leaving the context (done, Ctrl-C or an error) what is still queued is not started,
    and the calls in flight are waited for: their requests end by their timeout at the
    latest, and their answers reach the judgment cache, so a rerun does not ask for them
    again. Not waiting would let the workers run on while the caller closes the cache and the
    backend under them. On Ctrl-C or an error, `stopping` (Judge.stopping) is set first, so a
    request that failed transiently is not retried after a backoff of up to 30 s."""
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
    try:
        futures = {executor.submit(function, *args): tag for tag, function, *args in calls}
        yield ((futures[future], future.result()) for future in as_completed(futures))
    except BaseException:
        if stopping is not None:
            stopping.set()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# Every line of a partial file carries its job's key and the run key (what it was made
# from); the final files carry neither.
JOB_TAG = "_job"
RUN_KEY_TAG = "_run_key"


def is_finished(record: dict) -> bool:
    """A record that need not be asked again: no judgment of it ended in error."""
    if record["state"] == "error":
        return False
    return all(r["state"] != "error" for r in record.get("repeats", []))


def resume(partial_path: Path, run_key: str, *, total: int, name: str) -> dict[str, dict]:
    """The finished records an interrupted run with the same run key left in `partial_path`,
    by job key, untagged; says so when there are any. Records of another run key (other
    settings, responses or judge) or in state error are left to be asked again."""
    done = {}
    for record in read_partial_jsonl(partial_path):
        if (record.get(RUN_KEY_TAG) == run_key and JOB_TAG in record
                and is_finished(record)):
            done[record[JOB_TAG]] = _clean(record)
    if done:
        print(f"{name}: resuming, {len(done)} of {total} judgments already done")
    return done


def write_down(records: Iterable[tuple[str, dict]], done: dict[str, dict], partial_path: Path,
               run_key: str, *, total: int, name: str) -> None:
    """Put each `(job key, record)` of `records` into `done` and append it, tagged, to the
    partial file as soon as it comes (flushed: a kill loses no finished record), with a tqdm
    bar of `total` jobs counting the states. Only this (the main) thread writes."""
    from tqdm import tqdm

    states = Counter(record["state"] for record in done.values())
    progress = tqdm(total=total, initial=len(done), desc=name, unit="item")
    progress.set_postfix(states, refresh=False)
    try:
        with JsonlAppender(partial_path) as partial:
            for key, record in records:
                partial.write({**record, JOB_TAG: key, RUN_KEY_TAG: run_key})
                done[key] = record
                states[record["state"]] += 1
                progress.update(1)
                progress.set_postfix(states, refresh=False)
    finally:
        progress.close()


def _clean(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in (JOB_TAG, RUN_KEY_TAG)}


# -- the summary ----------------------------------------------------------------------------------

def rounded_mean(values: list[float], digits: int) -> float | None:
    """stats.mean rounded to `digits` decimals; None for no values."""
    value = stats.mean(values)
    return None if value is None else round(value, digits)


def format_number(value: float | None) -> str:
    """A mean as printed: '-' for none, else the shortest of %g."""
    return "-" if value is None else f"{value:g}"


def make_summary(settings: JudgeConfig, identity, scored: list[dict], canaries: list[dict],
                 *, seconds: float) -> dict:
    """summary.json (docs/records.md): counts per state, who judged, how, the canaries."""
    canary_summary = {"enabled": settings.canaries}
    for kind in ("good", "bad"):
        of_kind = [c for c in canaries if c["canary"] == kind]
        canary_summary[f"{kind}_mean"] = rounded_mean(
            [c["score"] for c in of_kind if c["state"] == "scored"], 2)
        canary_summary[kind] = stats.state_counts(of_kind)
    # Records (items and canaries) whose judgment was read from the cache, not asked.
    cache_hits = sum(bool(r["cached"]) for r in scored + canaries)
    # Records (items and canaries) with a judgment in error: the judge is incomplete, and the
    # next run asks for them again.
    errors = sum(not is_finished(r) for r in scored + canaries)
    return {
        "items": len(scored),
        "states": stats.state_counts(scored),
        "judge": {"backend": identity.backend, "model": identity.model,
                  "digest": identity.digest},
        "template": settings.template,
        "structured": settings.structured,
        "options": dict(settings.options),
        "repeats": settings.repeats,
        "canaries": canary_summary,
        "cache_hits": cache_hits,
        "errors": errors,
        "seconds": seconds,
    }


def summary_line(summary: dict) -> str:
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    line = f"judge: {summary['items']} items: {states}"
    canaries = summary["canaries"]
    if canaries["enabled"]:
        line += (f"; canaries: good mean {format_number(canaries['good_mean'])}, "
                 f"bad mean {format_number(canaries['bad_mean'])}")
    return line + f"; {summary['cache_hits']} from the judgment cache"
