"""The thing that asks a judge model: one client per backend, all with the same small interface.

The judge stage (`evalpipe/stages/judge.py`) decides what to ask and how to score the answer; a
backend only sends one chat prompt and returns a `Reply`: the text, and how many prompt tokens
the server says the model read (Ollama's prompt_eval_count, OpenAI's usage.prompt_tokens), so
that the judge stage can tell a prompt the server cut short (docs/judge.md). Backends:
  ollama    the official `ollama` client (host from judge.host / OLLAMA_HOST)
  openai    the official `openai` client, any OpenAI-compatible chat-completions server
  llamacpp  a GGUF file run in-process through `xllamacpp` (optional extra)

Errors are sorted in two kinds so that the judge stage knows whether to retry:
  TransientJudgeError  connection refused or reset, timeout, HTTP 5xx or 429: worth retrying
  JudgeError           anything else (unknown model, HTTP 4xx, a reply with no text)
Both carry one line that names the URL or file. Backends never retry themselves (the openai
client is built with max_retries=0): retrying is the judge stage's job, with its own count.

Several servers of one backend (judge.hosts) form a `HostPool`: each request goes to the
least busy server that is up; a server that fails (connection, timeout, 5xx) is left out for
a while, its requests go to the others, and it is checked again (preflight, same digest)
before it gets new ones. Preflight goes on with the servers that answer (and says which do
not) and insists that they all serve the same weights (same digest), because scores from two
different models must not be mixed in one run.

Request options (judge.options) are Ollama's names; each backend passes what it understands:
  ollama    all options as given, inside "options" (max_tokens is renamed num_predict)
  openai    seed, temperature, top_p, max_completion_tokens, and max_tokens (or num_predict,
            sent as max_tokens); Ollama-only keys such as num_ctx are not sent
  llamacpp  seed, temperature, top_p, top_k, min_p, repeat_penalty, max_tokens (or
            num_predict) per request; num_ctx (default 2048) and num_thread when loading
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evalpipe.config import mask_url_password
from evalpipe.errors import EvalpipeError
from evalpipe.io import sha256_file_remembered, sha256_json


class JudgeError(EvalpipeError):
    """A judge request that failed for good; the message names the server or file."""


class TransientJudgeError(JudgeError):
    """A judge request that may succeed if tried again (connection, timeout, 5xx)."""


class UnreachableJudgeError(TransientJudgeError):
    """No server answered at the address (connection refused or dropped, timeout): with
    several hosts, the others carry on."""


@dataclass(frozen=True)
class JudgeIdentity:
    """Who judged: recorded with every score, and part of the judgment cache key."""

    backend: str  # "ollama", "openai", "llamacpp"
    model: str  # model name as the server knows it (llamacpp: the GGUF file name)
    digest: str  # Ollama's model digest, the OpenAI server's model id/owned_by (+ meta hash),
    # or the SHA-256 of the GGUF file: what changes when the weights change


@dataclass
class JudgeRequest:
    prompt: str  # one user message
    options: dict[str, Any] = field(default_factory=dict)  # seed, temperature, num_ctx, ...
    schema: dict[str, Any] | None = None  # JSON schema the reply must follow, or None


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int | None  # prompt tokens the model read, as the server reports them
    # (Ollama: prompt_eval_count; OpenAI-style: usage.prompt_tokens); None: not reported
    context: int | None = None  # the context the request ran in when known (Ollama: the
    # num_ctx sent; llamacpp: n_ctx); None for OpenAI-style servers, which do not say


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


DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
OLLAMA_DEFAULT_PORT = 11434
LLAMACPP_DEFAULT_N_CTX = 2048
SCHEMA_NAME = "judgment"  # the json_schema name sent to OpenAI-style servers


def _one_line(text: Any) -> str:
    """Server messages may span lines; an error message must not."""
    return " ".join(str(text).split())


def _max_tokens(options: dict[str, Any]) -> int | None:
    """The reply length limit, under its OpenAI name or Ollama's."""
    value = options.get("max_tokens", options.get("num_predict"))
    return None if value is None else int(value)


def chat_extras(options: dict[str, Any], names: tuple[str, ...],
                schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of an OpenAI-style chat-completion request besides model and messages:
    the judge.options among `names` (what the server understands; the rest, such as
    Ollama's num_ctx, is left out), `max_tokens` (from max_tokens or num_predict), and the
    schema as a json_schema `response_format`."""
    extras = {name: options[name] for name in names if name in options}
    max_tokens = _max_tokens(options)
    if max_tokens is not None:
        extras["max_tokens"] = max_tokens
    if schema:
        extras["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }
    return extras


# ------------------------------------------------------------------------------------------
# Choosing the servers


def judge_hosts(hosts: list[str], host: str, env_var: str, default: str) -> list[str]:
    """judge.hosts if given, else judge.host, else the environment variable, else the
    backend's default."""
    if hosts:
        return list(hosts)
    if host:
        return [host]
    return [os.environ.get(env_var) or default]


def ollama_url(host: str) -> str:
    """A host as the ollama client reads it, written out in full: "localhost" and
    "0.0.0.0:11434" become "http://localhost:11434" and "http://0.0.0.0:11434"."""
    host = host.strip().rstrip("/")
    has_scheme = "://" in host
    parsed = urllib.parse.urlsplit(host if has_scheme else f"http://{host}")
    netloc = parsed.netloc
    if parsed.port is None and not has_scheme:
        netloc = f"{netloc}:{OLLAMA_DEFAULT_PORT}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/"), "", ""))


def make_backend(judge_config) -> JudgeBackend:
    """The backend for a run's [judge] section (an `evalpipe.config.JudgeConfig`)."""
    name = judge_config.backend
    if name == "llamacpp":
        return LlamaCppBackend(judge_config.model, options=judge_config.options)
    if name == "ollama":
        urls = [ollama_url(h) for h in judge_hosts(judge_config.hosts, judge_config.host,
                                                   "OLLAMA_HOST", DEFAULT_OLLAMA_HOST)]
        backends = [OllamaBackend(url, judge_config.model, timeout=judge_config.timeout)
                    for url in urls]
    elif name == "openai":
        urls = [h.strip().rstrip("/") for h in judge_hosts(
            judge_config.hosts, judge_config.host, "OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL)]
        backends = [OpenAIBackend(url, judge_config.model, api_key=judge_config.api_key,
                                  timeout=judge_config.timeout) for url in urls]
    else:
        raise JudgeError(f"judge.backend: unknown backend {name!r} "
                         "(known: 'ollama', 'openai', 'llamacpp')")
    return backends[0] if len(backends) == 1 else HostPool(backends)


class HostPool:
    """Several servers of one backend, safe to call from many threads.

    Each request goes to the least busy server that is up (fewest requests in flight; among
    equals, the one picked longest ago). A server that cannot be reached (connection refused
    or dropped, timeout: UnreachableJudgeError) is down for `retry_after` seconds and the
    request goes at once to another server; only when every server has failed does the error
    reach the judge stage (which retries with backoff). Other errors (an HTTP 5xx for this
    request) go to the judge stage as they are: its retry goes to whichever server is least
    busy then. After `retry_after` a down server is preflighted again and rejoins only if it
    still serves the same weights. Servers unreachable at preflight start out down.
    """

    RETRY_AFTER = 30.0  # seconds a failed server is left alone

    def __init__(self, backends: list, *, retry_after: float | None = None):
        if not backends:
            raise JudgeError("judge.hosts: no servers given")
        self.backends = list(backends)
        self.retry_after = self.RETRY_AFTER if retry_after is None else retry_after
        self.identity: JudgeIdentity | None = None
        self.max_context: int | None = None
        self._lock = threading.Lock()
        self._in_flight = {id(b): 0 for b in self.backends}
        self._last_turn = {id(b): 0 for b in self.backends}  # when it was last picked
        self._turns = 0
        self._down_until: dict[int, float] = {}  # server -> time it may be tried again
        self._refused: set[int] = set()  # came back with other weights: never again

    def preflight(self) -> JudgeIdentity:
        reachable, unreachable = [], []
        for backend in self.backends:
            try:
                reachable.append((backend, backend.preflight()))
            except UnreachableJudgeError as err:
                unreachable.append((backend, err))
        if not reachable:
            raise unreachable[0][1] if len(unreachable) == 1 else JudgeError(
                "cannot reach any judge host: "
                + ", ".join(backend.url for backend, _ in unreachable))
        first_backend, first = reachable[0]
        for backend, identity in reachable[1:]:
            if identity != first:
                raise JudgeError(
                    f"judge hosts serve different models: {first_backend.url} has "
                    f"{first.model} ({first.digest}), {backend.url} has "
                    f"{identity.model} ({identity.digest}); give servers with the same weights")
        if unreachable:
            print(f"judge: going on with {len(reachable)} of {len(self.backends)} hosts; "
                  "not reachable (tried again later): "
                  + ", ".join(backend.url for backend, _ in unreachable), file=sys.stderr)
            later = time.monotonic() + self.retry_after
            for backend, _ in unreachable:
                self._down_until[id(backend)] = later
        self.identity = first
        self.max_context = first_backend.max_context
        return first

    def _pick(self, tried: set[int]):
        """(server, returning): the least busy server not yet tried for this request that
        is up or whose time out is over (returning: it must be checked first); when every
        server is down and none was tried yet, the one due back first. (None, False) when
        there is none."""
        now = time.monotonic()
        with self._lock:
            usable = [b for b in self.backends if id(b) not in tried
                      and id(b) not in self._refused]
            candidates = [b for b in usable if self._down_until.get(id(b), 0.0) <= now]
            if not candidates and usable and not tried:
                # Every server is down: the judge stage's retry tries the one back first.
                candidates = [min(usable, key=lambda b: self._down_until[id(b)])]
            if not candidates:
                return None, False
            backend = min(candidates,
                          key=lambda b: (self._in_flight[id(b)], self._last_turn[id(b)]))
            returning = id(backend) in self._down_until
            if returning:  # nobody else checks it meanwhile
                self._down_until[id(backend)] = now + self.retry_after
            self._in_flight[id(backend)] += 1
            self._turns += 1
            self._last_turn[id(backend)] = self._turns
            return backend, returning

    def _rejoins(self, backend) -> bool:
        """A server back from a failure serves again only with the weights of the run."""
        try:
            identity = backend.preflight()
        except JudgeError:
            return False
        if identity != self.identity:
            with self._lock:
                self._refused.add(id(backend))
            print(f"judge: host {backend.url} now serves {identity.model} ({identity.digest}), "
                  f"not {self.identity.model} ({self.identity.digest}): no longer asked",
                  file=sys.stderr)
            return False
        with self._lock:
            self._down_until.pop(id(backend), None)
        return True

    def ask(self, request: JudgeRequest) -> Reply:
        tried: set[int] = set()
        last_error: UnreachableJudgeError | None = None
        while True:
            backend, returning = self._pick(tried)
            if backend is None:
                raise last_error or UnreachableJudgeError(
                    "no judge host is up: " + ", ".join(b.url for b in self.backends))
            tried.add(id(backend))
            try:
                if returning and not self._rejoins(backend):
                    continue
                return backend.ask(request)
            except UnreachableJudgeError as err:
                last_error = err
                with self._lock:
                    self._down_until[id(backend)] = time.monotonic() + self.retry_after
            finally:
                with self._lock:
                    self._in_flight[id(backend)] -= 1

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


# ------------------------------------------------------------------------------------------
# Ollama


def _ollama_names_match(a: str, b: str) -> bool:
    """Ollama's name matching: "llama3" is "llama3:latest" is "library/llama3:latest"."""

    def canonical(name: str) -> str:
        name = name.strip().lower()
        for prefix in ("registry.ollama.ai/", "library/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    return canonical(a) == canonical(b)


class OllamaBackend:
    """One Ollama server, through the official `ollama.Client`.

    Identity: the model's name and digest as GET /api/tags lists them (the digest is the
    SHA-256 of the model's manifest, so it changes when the model is pulled anew);
    Ollama's /api/show describes a model but carries no digest.
    """

    def __init__(self, url: str, model: str, *, timeout: float):
        import ollama

        self.url = mask_url_password(url)  # for messages; the client gets the real one
        self.model = model
        self.timeout = timeout
        self.client = ollama.Client(host=url, timeout=timeout)
        self.max_context: int | None = None

    def _unreachable(self) -> UnreachableJudgeError:
        return UnreachableJudgeError(f"cannot reach Ollama at {self.url}: is it running? "
                                     "start it with 'ollama serve'")

    def preflight(self) -> JudgeIdentity:
        import httpx
        import ollama

        try:
            listing = self.client.list()
        except (ConnectionError, httpx.TransportError):
            raise self._unreachable() from None
        except ollama.ResponseError as err:
            raise JudgeError(f"Ollama at {self.url} answered HTTP {err.status_code} to "
                             f"/api/tags: {_one_line(err.error)}") from None
        except (ValueError, TypeError) as err:  # not JSON, or not a model list
            raise JudgeError(f"Ollama at {self.url} answered /api/tags with something that "
                             f"is not a model list: {_one_line(err)[:200]}") from None
        for entry in listing.models:
            name = entry.model or ""
            if _ollama_names_match(name, self.model):
                if not entry.digest:
                    raise JudgeError(f"Ollama at {self.url} lists model '{name}' "
                                     "without a digest")
                self.max_context = self._context_length(name)
                return JudgeIdentity(backend="ollama", model=name, digest=entry.digest)
        raise JudgeError(f"Ollama at {self.url} has no model '{self.model}': "
                         f"run 'ollama pull {self.model}'")

    def _context_length(self, name: str) -> int | None:
        """The model's context length from POST /api/show: model_info's
        "<architecture>.context_length"; None when the server does not say."""
        import httpx
        import ollama

        try:
            info = self.client.show(name).modelinfo or {}
        except (ConnectionError, httpx.TransportError):
            raise self._unreachable() from None
        except ollama.ResponseError as err:
            raise JudgeError(f"Ollama at {self.url} answered HTTP {err.status_code} to "
                             f"/api/show: {_one_line(err.error)}") from None
        except (ValueError, TypeError):
            return None
        lengths = [value for key, value in info.items()
                   if key.endswith(".context_length") and isinstance(value, int)]
        return lengths[0] if lengths else None

    def ask(self, request: JudgeRequest) -> Reply:
        import httpx
        import ollama

        options = dict(request.options)
        if "max_tokens" in options:  # the OpenAI name, for one options table for all backends
            max_tokens = options.pop("max_tokens")
            options.setdefault("num_predict", max_tokens)
        try:
            response = self.client.chat(
                model=self.model,
                messages=[{"role": "user", "content": request.prompt}],
                options=options or None,
                format=request.schema or "",
                stream=False,
            )
        except httpx.TimeoutException:
            raise UnreachableJudgeError(f"Ollama at {self.url} did not answer within "
                                        f"{self.timeout:g} s") from None
        except ConnectionError:  # what the ollama client makes of a refused connection
            raise self._unreachable() from None
        except httpx.TransportError as err:  # reset, dropped, a protocol error
            raise UnreachableJudgeError(f"the connection to Ollama at {self.url} failed: "
                                        f"{type(err).__name__}: {_one_line(err)}") from None
        except ollama.ResponseError as err:
            message = _one_line(err.error)
            if err.status_code >= 500 or err.status_code == 429:  # 429: queue full
                raise TransientJudgeError(f"Ollama at {self.url} answered HTTP "
                                          f"{err.status_code}: {message}") from None
            if err.status_code == 404 and "not found" in message:
                raise JudgeError(f"Ollama at {self.url} has no model '{self.model}': "
                                 f"run 'ollama pull {self.model}'") from None
            raise JudgeError(f"Ollama at {self.url} answered HTTP {err.status_code}: "
                             f"{message}") from None
        except (ValueError, TypeError) as err:  # a body that is not JSON or not a chat reply
            raise JudgeError(f"Ollama at {self.url} answered something that is not a chat "
                             f"reply: {_one_line(err)[:200]}") from None
        text = response.message.content if response.message else None
        if not text:
            raise JudgeError(f"Ollama at {self.url} gave a reply with no text "
                             f"(done_reason: {response.done_reason})")
        num_ctx = options.get("num_ctx")
        return Reply(text, response.prompt_eval_count,
                     int(num_ctx) if num_ctx is not None else None)

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------
# OpenAI-compatible servers


# The judge.options an OpenAI chat-completions request carries (besides the length limit).
OPENAI_OPTION_NAMES = ("seed", "temperature", "top_p", "max_completion_tokens")


def openai_digest(entry) -> str:
    """The identity of a model in GET /v1/models: "id/owned_by", plus "/meta:" and the first
    12 hex digits of the SHA-256 of its `meta` object when there is one (llama.cpp's
    llama-server: vocabulary, parameter count, file size...). That is the best an
    OpenAI-style server tells about its weights: OpenAI gives a new snapshot a new id.
    `created` is left out: vLLM and llama-server report the time of the request there, so
    it would change on every run and no cached judgment would ever be found again."""
    digest = f"{entry.id}/{getattr(entry, 'owned_by', None)}"
    meta = getattr(entry, "meta", None)
    if isinstance(meta, dict):
        digest += f"/meta:{sha256_json(meta)[:12]}"
    return digest


class OpenAIBackend:
    """One OpenAI-compatible server (OpenAI itself, vLLM, llama.cpp's server, LM Studio,
    Ollama's /v1 ...), through the official `openai.OpenAI` client.

    Identity: see `openai_digest`.
    """

    def __init__(self, url: str, model: str, *, api_key: str = "", timeout: float):
        import openai

        self.url = mask_url_password(url)  # for messages; the client gets the real one
        self.model = model
        self.timeout = timeout
        self.client = openai.OpenAI(
            base_url=url,
            # Local servers need no key, but the client insists on one.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout,
            max_retries=0,  # the judge stage retries, with its own count
        )
        self.max_context: int | None = None  # the server's own setting, not sent

    def _status_error(self, err, action: str) -> JudgeError:
        import openai

        message = err.message
        if isinstance(err.body, dict) and isinstance(err.body.get("message"), str):
            message = err.body["message"]
        message = _one_line(message)
        if isinstance(err, openai.AuthenticationError):
            return JudgeError(f"the server at {self.url} refused the API key (HTTP 401: "
                              f"{message}): set judge.api_key or OPENAI_API_KEY")
        retry = err.status_code >= 500 or isinstance(err, openai.RateLimitError)
        error_type = TransientJudgeError if retry else JudgeError
        return error_type(f"the server at {self.url} answered HTTP {err.status_code} "
                          f"to {action}: {message}")

    def preflight(self) -> JudgeIdentity:
        import openai

        try:
            models = list(self.client.models.list())
        except openai.APIConnectionError as err:
            raise UnreachableJudgeError(f"cannot reach the OpenAI-compatible server at "
                                        f"{self.url}: {_one_line(err.__cause__ or err)}") from None
        except openai.APIStatusError as err:
            raise JudgeError(str(self._status_error(err, "GET /models"))) from None
        except (openai.OpenAIError, ValueError, TypeError, AttributeError) as err:
            raise JudgeError(f"the server at {self.url} answered GET /models with something "
                             f"that is not a model list: {_one_line(err)[:200]}") from None
        for entry in models:
            if getattr(entry, "id", None) == self.model:
                return JudgeIdentity(backend="openai", model=entry.id,
                                     digest=openai_digest(entry))
        known = ", ".join(sorted(str(getattr(m, "id", m)) for m in models)) or "none"
        raise JudgeError(f"the server at {self.url} has no model '{self.model}' "
                         f"(it has: {known})")

    def ask(self, request: JudgeRequest) -> Reply:
        import openai

        try:
            completion = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": request.prompt}],
                **chat_extras(request.options, OPENAI_OPTION_NAMES, request.schema),
            )
        except openai.APITimeoutError:
            raise UnreachableJudgeError(f"the server at {self.url} did not answer within "
                                        f"{self.timeout:g} s") from None
        except openai.APIConnectionError as err:
            raise UnreachableJudgeError(f"cannot reach the OpenAI-compatible server at "
                                        f"{self.url}: {_one_line(err.__cause__ or err)}") from None
        except openai.APIStatusError as err:
            raise self._status_error(err, "POST /chat/completions") from None
        except (openai.OpenAIError, ValueError, TypeError) as err:
            raise JudgeError(f"the server at {self.url} answered something that is not a "
                             f"chat completion: {_one_line(err)[:200]}") from None
        choices = getattr(completion, "choices", None)
        if not choices:
            raise JudgeError(f"the server at {self.url} answered a chat completion "
                             "without choices")
        message = choices[0].message
        if not message.content:
            refusal = getattr(message, "refusal", None)
            why = f"refusal: {_one_line(refusal)}" if refusal else \
                f"finish_reason: {choices[0].finish_reason}"
            raise JudgeError(f"the server at {self.url} gave a reply with no text ({why})")
        usage = getattr(completion, "usage", None)
        return Reply(message.content, getattr(usage, "prompt_tokens", None))

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------
# llama.cpp in-process


# Sampling options the llama.cpp server reads from a chat-completion request.
LLAMACPP_REQUEST_OPTIONS = ("seed", "temperature", "top_p", "top_k", "min_p", "repeat_penalty")


class LlamaCppBackend:
    """A GGUF file run in this process by `xllamacpp` (a wrapper of llama.cpp's server).

    The model is loaded once, at preflight or the first request, with n_ctx from the
    options' num_ctx; requests are served one at a time (llama.cpp runs one slot here, and
    the lock keeps threads from queueing inside C++). Replies use the chat template stored
    in the GGUF; a schema becomes an OpenAI-style response_format, which llama.cpp turns into
    a grammar that constrains sampling. judge.timeout does not apply: there is no server to
    wait for. Identity: the file name and the SHA-256 of the file.
    """

    def __init__(self, model_path: str, *, options: dict[str, Any] | None = None):
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            raise JudgeError("the llamacpp judge needs xllamacpp: "
                             "pip install 'evalpipe[llamacpp]'") from None
        self.path = Path(model_path).expanduser()
        if not self.path.is_file():
            raise JudgeError(f"judge.model: GGUF file not found: {self.path}")
        load_options = options or {}  # the per-request ones are read again in ask()
        self.n_ctx = int(load_options.get("num_ctx") or LLAMACPP_DEFAULT_N_CTX)
        self.max_context: int | None = self.n_ctx  # fixed when the model is loaded
        self.n_threads = int(load_options.get("num_thread") or -1)  # -1: llama.cpp decides
        self._server = None
        self._closed = False
        self._lock = threading.Lock()

    def _load(self):
        """Load the model (caller holds the lock); never again once closed, so a request
        still under way at close() cannot bring the model back."""
        if self._closed:
            raise JudgeError(f"llama.cpp judge {self.path}: the backend is closed")
        if self._server is None:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(self.path)
            params.n_ctx = self.n_ctx
            params.n_parallel = 1
            params.cpuparams.n_threads = self.n_threads
            params.cpuparams_batch.n_threads = self.n_threads
            params.warmup = False
            params.verbosity = -1  # llama.cpp's log would drown the progress bar
            try:
                self._server = xllamacpp.Server(params)
            except Exception as err:  # noqa: BLE001 - xllamacpp raises RuntimeError
                raise JudgeError(f"cannot load the GGUF file {self.path}: "
                                 f"{_one_line(err)}") from None
        return self._server

    def preflight(self) -> JudgeIdentity:
        with self._lock:
            self._load()
        return JudgeIdentity(backend="llamacpp", model=self.path.name,
                             digest=sha256_file_remembered(self.path))

    def ask(self, request: JudgeRequest) -> Reply:
        body = {"messages": [{"role": "user", "content": request.prompt}], "stream": False,
                **chat_extras(request.options, LLAMACPP_REQUEST_OPTIONS, request.schema)}
        with self._lock:
            server = self._load()
            try:
                reply = server.handle_chat_completions(body)
            except Exception as err:  # noqa: BLE001 - ValueError for a bad request or schema
                raise JudgeError(f"llama.cpp judge {self.path}: {_one_line(err)}") from None
        if not isinstance(reply, dict):
            raise JudgeError(f"llama.cpp judge {self.path}: unexpected reply {reply!r:.200}")
        error = reply.get("error", reply if "choices" not in reply else None)
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise JudgeError(f"llama.cpp judge {self.path}: {_one_line(message)}")
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"llama.cpp judge {self.path}: a reply without a message: "
                             f"{json.dumps(reply)[:200]}") from None
        if not text:
            raise JudgeError(f"llama.cpp judge {self.path} gave a reply with no text")
        usage = reply.get("usage")
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Reply(text, prompt_tokens if isinstance(prompt_tokens, int) else None,
                     self.n_ctx)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._server = None  # the C++ server stops when its last reference goes
