"""Asking a judge: what single judging (the judge stage) and together judging share.

`open_judge` preflights the backend and opens the judgment cache; `Judge.ask` asks one prompt
(cache, retries with backoff, timing); `sized_options` and `truncation` keep a prompt from being
cut without a word (docs/judge.md, "Prompt sizes"); `judge_fields` lays out the fields a
judgment adds to a record (docs/records.md); `answering`, `resume` and `write_down` are the loop
that asks on several threads and writes each finished record down at once (the partial file,
the progress bar); `served_digest` asks the server which weights it serves, for the stage cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from evalpipe import stats
from evalpipe.config import JudgeConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import (
    DataError,
    JsonlAppender,
    read_jsonl,
    read_partial_jsonl,
    sha256_file_remembered,
)
from evalpipe.judging.cache import JudgmentCache, cache_key, cache_path
from evalpipe.judging.expected import TOP_LOGPROBS, expected_score
from evalpipe.judging.prompts import parse_reply, schema
from evalpipe.manifest import Unchecked

# Backoff before retry number r (0-based) is RETRY_BASE_DELAY * 2**r seconds, at most
# RETRY_MAX_DELAY. Tests make it small through EVALPIPE_JUDGE_RETRY_DELAY.
RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


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
    logprobs: list | None = None  # backends.Reply.logprobs, when asked for and sent


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
    # judge.scoring = "expected" (evalpipe/judging/expected.py): how the score was made, the
    # judge's probabilities of the scores, their weighted mean; None under integer scoring
    scoring: str | None = None
    distribution: dict[str, float] | None = None
    expected: float | None = None
    integer_score: int | None = None  # the score the reply wrote, when `score` is expected


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

    def ask(self, prompt: str, options: dict, schema: dict | None = None,
            top_logprobs: int = 0) -> Answer:
        """The judge's raw reply to `prompt`: from the cache if it was asked before, else from
        the backend, retrying transient failures with exponential backoff. A reply whose
        prompt token count says the prompt was cut (`truncation`) is an error, never cached.
        `top_logprobs` > 0 asks for the reply's log-probabilities too (JudgeRequest)."""
        from evalpipe.judging.backends import (
            JudgeError,
            JudgeRequest,
            TransientJudgeError,
        )

        key = cache_key(self.identity, prompt, options, schema, top_logprobs)
        reply = self.cache.get(key)
        if reply is not None and truncation(prompt, reply) is None:
            return Answer(reply.text, None, 0.0, True, reply.logprobs)
        clock = time.monotonic()
        request = JudgeRequest(prompt=prompt, options=dict(options), schema=schema,
                               top_logprobs=top_logprobs)
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
        return Answer(reply.text, None, seconds, False, reply.logprobs)


def judge_prompt(judge: Judge, template: str, structured: bool, prompt: str,
                 options: dict, scoring: str = "integer") -> Judgment:
    """Ask `prompt` (rendered with `template`) and parse the reply. With `scoring`
    "expected" the reply's log-probabilities are asked for too, and the score is the
    expected score rounded to an integer where they give one (evalpipe/judging/expected.py);
    else the integer score stands and `scoring` says why."""
    top_logprobs = TOP_LOGPROBS if scoring == "expected" else 0
    answer = judge.ask(prompt, options, schema(template) if structured else None,
                       top_logprobs)
    if answer.error is not None:
        return Judgment("error", None, None, None, answer.error, answer.seconds, answer.cached)
    parsed = parse_reply(template, structured, answer.raw)
    judgment = Judgment(parsed.state, parsed.score, parsed.reason, answer.raw, None,
                        answer.seconds, answer.cached)
    if scoring != "expected" or parsed.state != "scored":
        return judgment
    found = expected_score(template, parsed.score, answer.logprobs)
    if found.score is None:
        return dataclasses.replace(judgment, scoring=found.scoring, integer_score=parsed.score)
    # Rounded half up (76.5 -> 77): `score` stays an integer 0..100, as everything that reads
    # scores.jsonl expects; expected_score keeps the fraction.
    return dataclasses.replace(judgment, score=math.floor(found.score + 0.5),
                               scoring=found.scoring,
                               distribution=found.distribution, expected=found.score,
                               integer_score=parsed.score)


def preflight(backend, settings: JudgeConfig):
    """The backend's preflight (server, model, digest); a model the server lacks is pulled
    first where judge.pull allows it and the backend can (Ollama), else the one-line error
    says what to run. Status checks call backend.preflight() itself: they never pull."""
    from evalpipe.judging.backends import ModelMissingError

    try:
        return backend.preflight()
    except ModelMissingError:
        if not (settings.pull and hasattr(backend, "pull")):
            raise
    backend.pull()
    return backend.preflight()


@contextmanager
def open_judge(config: RunConfig, results: Path) -> Iterator[Judge]:
    """Preflight the backend and open the judgment cache (`cache_path(config, results)`). A
    failed preflight is one line saying what to run; nothing else has happened yet."""
    from evalpipe.judging.backends import JudgeError, make_backend

    backend = make_backend(config.judge)
    try:
        try:
            identity = preflight(backend, config.judge)
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


def is_empty(response: str | None) -> bool:
    return response is None or not response.strip()


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
    if settings.scoring == "expected":
        fields.update(expected_fields(first))
    if settings.repeats > 1:
        fields["repeats"] = [{"seed": seed, "state": j.state, "score": j.score,
                              "raw_reply": j.raw,
                              **(expected_fields(j) if settings.scoring == "expected" else {})}
                             for seed, j in zip(seeds_of(settings), judgments)]
    return fields


def expected_fields(judgment: Judgment) -> dict:
    """What judge.scoring = "expected" adds to a record or a repeat (docs/records.md): how
    the score was made, the score the reply wrote, the distribution, the expected score
    (the last two null where the integer score stands)."""
    return {"scoring": judgment.scoring, "integer_score": judgment.integer_score,
            "score_distribution": judgment.distribution, "expected_score": judgment.expected}


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


# -- numbers in messages ---------------------------------------------------------------------------

def rounded_mean(values: list[float], digits: int) -> float | None:
    """stats.mean rounded to `digits` decimals; None for no values."""
    value = stats.mean(values)
    return None if value is None else round(value, digits)


def format_number(value: float | None) -> str:
    """A mean as printed: '-' for none, else the shortest of %g."""
    return "-" if value is None else f"{value:g}"
