"""What every judge backend shares: the interface, the request and reply, the errors.

A backend only sends one chat prompt and returns a `Reply`: the text, and how many prompt
tokens the server says the model read (Ollama's prompt_eval_count, OpenAI's
usage.prompt_tokens), so that the judge stage can tell a prompt the server cut short
(docs/judge.md). The judge stage (`evalpipe/judging/engine.py`) decides what to ask and how
to score the answer. The backends themselves are one module each beside this one, found by
name through the registry in `evalpipe/judging/backends/__init__.py`.

Errors are sorted in two kinds so that the judge stage knows whether to retry:
  TransientJudgeError  connection refused or reset, timeout, HTTP 5xx or 429: worth retrying
  JudgeError           anything else (unknown model, HTTP 4xx, a reply with no text)
Both carry one line that names the URL or file. Backends never retry themselves (the openai
client is built with max_retries=0): retrying is the judge stage's job, with its own count.

Request options (judge.options) are Ollama's names; each backend passes what it understands
(see each backend's module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalpipe.errors import EvalpipeError


class JudgeError(EvalpipeError):
    """A judge request that failed for good; the message names the server or file."""


class TransientJudgeError(JudgeError):
    """A judge request that may succeed if tried again (connection, timeout, 5xx)."""


class ModelMissingError(JudgeError):
    """The server answers but does not have the judge model; an Ollama server can pull it
    (judge.pull)."""


class UnreachableJudgeError(TransientJudgeError):
    """No server answered at the address (connection refused or dropped, timeout): with
    several hosts, the others carry on."""


@dataclass(frozen=True)
class JudgeIdentity:
    """Who judged: recorded with every score, and part of the judgment cache key."""

    backend: str  # "ollama", "openai", "llamacpp", "mock"
    model: str  # model name as the server knows it (llamacpp: the GGUF file name; mock: the
    # scoring rule)
    digest: str  # Ollama's model digest, the OpenAI server's model id/owned_by (+ meta hash),
    # or the SHA-256 of the GGUF file: what changes when the weights change (mock: a hash of
    # the rule's name)


@dataclass
class JudgeRequest:
    prompt: str  # one user message
    options: dict[str, Any] = field(default_factory=dict)  # seed, temperature, num_ctx, ...
    schema: dict[str, Any] | None = None  # JSON schema the reply must follow, or None
    top_logprobs: int = 0  # > 0: ask for the log-probabilities of this many top tokens at
    # every position of the reply (judge.scoring = "expected"); 0: do not ask


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int | None  # prompt tokens the model read, as the server reports them
    # (Ollama: prompt_eval_count; OpenAI-style: usage.prompt_tokens); None: not reported
    context: int | None = None  # the context the request ran in when known (Ollama: the
    # num_ctx sent; llamacpp: n_ctx); None for OpenAI-style servers, which do not say
    logprobs: Logprobs | None = None  # the reply's tokens with their top alternatives, when
    # asked for (JudgeRequest.top_logprobs) and the server sent them; None otherwise


# A reply's log-probabilities, one entry per token of the reply, in order:
# [token, [[candidate, logprob], ...]] -- the token written and the top candidates at its
# position (the token itself among them when the server counts it in the top N). Lists, not
# objects, so that the judgment cache stores them as JSON and gives back the same value.
Logprobs = list


def openai_logprobs(content: Any) -> Logprobs | None:
    """The reply's Logprobs from an OpenAI-style `choices[0].logprobs.content` (a list of
    {token, logprob, top_logprobs: [{token, logprob}, ...]}, as dicts or the openai client's
    objects; Ollama's `logprobs` has the same shape); None when there are none."""
    if not content:
        return None

    def get(entry, name):
        return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)

    tokens = []
    for entry in content:
        token = get(entry, "token")
        candidates = [[get(c, "token"), float(get(c, "logprob"))]
                      for c in get(entry, "top_logprobs") or []]
        if token not in [c[0] for c in candidates]:  # the token written is a candidate too
            candidates.append([token, float(get(entry, "logprob"))])
        tokens.append([token, candidates])
    return tokens


class JudgeBackend(Protocol):
    # The largest context (num_ctx) a request may use, known after preflight: Ollama, the
    # model's context length (/api/show), so a request may raise num_ctx up to it; llamacpp,
    # the n_ctx it was loaded with; None when unknown (OpenAI-style servers fix it themselves).
    max_context: int | None

    def preflight(self) -> JudgeIdentity:
        """Check the server answers and knows the model, before the first item; raise
        JudgeError with one line saying what to run (`ollama serve`, `ollama pull llama3`,
        the URL tried) otherwise."""

    def ask(self, request: JudgeRequest) -> Reply:
        """Send one prompt and return the reply. Raises TransientJudgeError or JudgeError."""

    def close(self) -> None:
        """Release connections or the loaded model."""


SCHEMA_NAME = "judgment"  # the json_schema name sent to OpenAI-style servers


def _one_line(text: Any) -> str:
    """Server messages may span lines; an error message must not."""
    return " ".join(str(text).split())


def _max_tokens(options: dict[str, Any]) -> int | None:
    """The reply length limit, under its OpenAI name or Ollama's."""
    value = options.get("max_tokens", options.get("num_predict"))
    return None if value is None else int(value)


def chat_extras(options: dict[str, Any], names: tuple[str, ...],
                schema: dict[str, Any] | None = None, top_logprobs: int = 0) -> dict[str, Any]:
    """The fields of an OpenAI-style chat-completion request besides model and messages:
    the judge.options among `names` (what the server understands; the rest, such as
    Ollama's num_ctx, is left out), `max_tokens` (from max_tokens or num_predict), the
    schema as a json_schema `response_format`, and `logprobs`/`top_logprobs` when asked."""
    extras = {name: options[name] for name in names if name in options}
    max_tokens = _max_tokens(options)
    if max_tokens is not None:
        extras["max_tokens"] = max_tokens
    if schema:
        extras["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }
    if top_logprobs:
        extras["logprobs"] = True
        extras["top_logprobs"] = top_logprobs
    return extras


def judge_hosts(hosts: list[str], host: str, env_var: str, default: str) -> list[str]:
    """judge.hosts if given, else judge.host, else the environment variable, else the
    backend's default."""
    if hosts:
        return list(hosts)
    if host:
        return [host]
    return [os.environ.get(env_var) or default]

