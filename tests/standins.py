"""Stand-in judge servers for tests: real HTTP servers that speak Ollama's and OpenAI's APIs.

Each stand-in is a `http.server.ThreadingHTTPServer` on 127.0.0.1 (a free port) served from a
daemon thread, so the real `ollama` and `openai` client libraries talk to it over real sockets,
exactly as they would talk to the real servers. What the "model" answers is decided by a reply
function `reply(body) -> str | StandInFailure`, called with the parsed JSON body of every chat
request; the default, `book_judge`, scores a response deterministically by its word overlap
with the correct output, so tests can assert exact scores. `together_judge` does the same for
each response of a together-mode prompt (all models' responses to one item at once).

    with OllamaStandIn() as server:               # GET /api/tags, POST /api/show, /api/chat, ...
        client = ollama.Client(host=server.url)
    with OpenAIStandIn(api_key="sk-test") as server:   # server.url ends in "/v1"
        client = openai.OpenAI(base_url=server.url, api_key="sk-test")

The JSON shapes follow what the servers send and what the client libraries parse:
Ollama's docs/api.md (ollama/_types.py) and OpenAI's chat-completion and model objects
(openai/types/chat/chat_completion.py, openai/types/model.py).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from evalpipe.judging.backends.mock import (  # noqa: F401 - tests import them from here
    book_score,
    overlap_f1,
    overlap_reply,
    parse_book_prompt,
    parse_rubric_prompt,
    parse_together_prompt,
    rubric_score,
    single_reply,
)
from evalpipe.judging.backends.mock import prompt_tokens as mock_prompt_tokens
from evalpipe.judging.backends.mock import together_entries as mock_together_entries

# ------------------------------------------------------------------------------------------
# What a reply function may return instead of text


class StandInFailure:
    """A failed answer: an HTTP error status, a slow answer, or a dropped connection.

    status  the HTTP status to answer with
    body    the error message, wrapped in the API's error JSON ({"error": ...}); with
            raw=True it is sent as it is (to answer garbage)
    delay   seconds to wait before answering (longer than the client's timeout: a timeout)
    drop    close the connection without answering at all
    """

    def __init__(self, status: int = 500, body: str = "internal error", *,
                 delay: float = 0.0, drop: bool = False, raw: bool = False):
        self.status = status
        self.body = body
        self.delay = delay
        self.drop = drop
        self.raw = raw

    def __repr__(self) -> str:
        return (f"StandInFailure(status={self.status}, body={self.body!r}, "
                f"delay={self.delay}, drop={self.drop}, raw={self.raw})")


class WithLogprobs:
    """An answer with the log-probabilities of its tokens: `tokens` is the reply cut into
    tokens, each `(token, [(candidate, logprob), ...])` -- the token written and the top
    candidates at its position, most likely first, the token written among them. The text is
    the tokens joined. Sent (in the API's own shape) when the request asks for logprobs and
    the stand-in was made with logprobs=True."""

    def __init__(self, tokens: list[tuple[str, list[tuple[str, float]]]]):
        self.tokens = tokens
        self.text = "".join(token for token, _ in tokens)

    def __repr__(self) -> str:
        return f"WithLogprobs({self.tokens!r})"


def certain_tokens(text: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """A plain answer's tokens when logprobs are asked for: words and spaces, each certain
    (log-probability 0, the only candidate)."""
    return [(piece, [(piece, 0.0)]) for piece in re.findall(r"\d+|[^\d\s]+|\s+", text)]


def logprob_entries(answer: "str | WithLogprobs", top: int) -> list[dict]:
    """The per-token log-probabilities as both APIs send them: [{token, logprob, bytes,
    top_logprobs: [{token, logprob, bytes}, ...]}] (Ollama's ChatResponse.logprobs, OpenAI's
    choices[0].logprobs.content), `top` candidates at most."""
    tokens = answer.tokens if isinstance(answer, WithLogprobs) else certain_tokens(answer)
    entries = []
    for token, candidates in tokens:
        logprob = dict(candidates).get(token, 0.0)
        entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                        "top_logprobs": [{"token": c, "logprob": lp, "bytes": list(c.encode())}
                                         for c, lp in candidates[:top]]})
    return entries


Reply = Callable[[dict], "str | WithLogprobs | StandInFailure"]

# ------------------------------------------------------------------------------------------
# The deterministic stand-in judge


def prompt_of(body: dict) -> str:
    """The prompt text of a request body: the last user message of a chat body (content as a
    string or as OpenAI's list of text parts), or the "prompt" of an Ollama /api/generate."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content") or ""
            if isinstance(content, list):  # OpenAI's [{"type": "text", "text": ...}, ...]
                content = "".join(part.get("text", "") for part in content
                                  if isinstance(part, dict))
            return content
    return body.get("prompt") or ""


def wants_structured(body: dict) -> bool:
    """Does the request ask for JSON? Ollama: "format" is a schema (or "json"); OpenAI:
    response_format of type json_schema (or json_object)."""
    ollama_format = body.get("format")
    if isinstance(ollama_format, dict) or ollama_format == "json":
        return True
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema", "json_object")


def book_judge(body: dict) -> str | StandInFailure:
    """A deterministic judge for the book's prompt and the rubric prompt: the mock judge's
    overlap rule (evalpipe/judging/backends/mock.py, single_reply). A prompt of neither
    layout gets HTTP 400, so a prompt-rendering bug cannot pass unseen.
    """
    reply = single_reply(prompt_of(body), wants_structured(body))
    if reply is not None:
        return reply
    return StandInFailure(400, "stand-in judge: the prompt has neither the book's markers "
                               "(correct output `...`, score the model response `...`) nor the "
                               "rubric's (Reference answer: / Response to grade:)")


# What a judge that is not reading gives the judge stage's bad canaries (its empty-looking
# replies, evalpipe/stages/judge.py EMPTY_LOOKING): high scores, the first as high as a copy of
# the reference gets.
FOOLED_SCORES = {"N/A": 100, "...": 90, "I don't know.": 80, "None": 70, "### Response:": 60}


def fooled_by_canaries(body: dict) -> str | StandInFailure:
    """The book judge (book prompt only), except that the empty-looking replies of the bad
    canaries get FOOLED_SCORES: a judge that fails its canaries (good ones 100, bad ones 60
    to 100)."""
    book = parse_book_prompt(prompt_of(body))
    if book is not None and book[1] in FOOLED_SCORES:
        return str(FOOLED_SCORES[book[1]])
    return book_judge(body)


def together_entries(body: dict) -> list[dict] | None:
    """What the stand-in judge answers to a together prompt, as entries {response, score,
    reason} in label order (None when the prompt is not one): the mock judge's."""
    return mock_together_entries(prompt_of(body))


def together_judge(body: dict) -> str | StandInFailure:
    """A deterministic judge for together prompts: each response's score depends on that
    response alone (see together_entries), so tests can check that shuffles are undone.
    Answers {"scores": [...]} as JSON when structured output is asked, else one line per
    response ("Response N: score - reason"). Any other prompt goes to book_judge, so one
    stand-in serves the single and the together mode."""
    if together_entries(body) is None:
        return book_judge(body)
    return overlap_reply(prompt_of(body), wants_structured(body))


# ------------------------------------------------------------------------------------------
# Prompt tokens, and truncation as Ollama does it

CHAT_TEMPLATE_TOKENS = 5  # the stand-in chat template's tokens around the user message
OLLAMA_DEFAULT_NUM_CTX = 2048  # the context of a request that sends no num_ctx


def prompt_tokens(body: dict) -> int:
    """The stand-in model's token count of a request's prompt: one token per word and per
    punctuation mark (so never fewer than the words, as with any real tokenizer; and more
    than evalpipe's estimate of UTF-8 bytes / 3 for text like "x. x. x."), plus the chat
    template's."""
    return mock_prompt_tokens(prompt_of(body)) + CHAT_TEMPLATE_TOKENS


def tokens_read(tokens: int, context: int | None, cut: str) -> int:
    """What a server that cuts silently reports as the prompt tokens read: all of them when
    they fit in `context`; else Ollama 0.6 and later keep num_ctx / 2 + 2 (cut="half"),
    older runners keep num_ctx (cut="whole")."""
    if context is None or tokens <= context:
        return tokens
    return context // 2 + 2 if cut == "half" else context


# ------------------------------------------------------------------------------------------
# The HTTP machinery shared by both stand-ins


def unused_url() -> str:
    """http://127.0.0.1:PORT of a port nothing listens on: a server that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive as httpx expects; every answer sends Content-Length
    # or is chunked.
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY every answer waits ~40 ms for the client's delayed ACK (Nagle).
    disable_nagle_algorithm = True
    server_version = "evalpipe-standin"
    standin: "_StandInServer"  # set on the per-server subclass

    def log_message(self, format, *args):  # quiet: tests read stand-in.requests instead
        pass

    def setup(self):
        super().setup()
        self.standin._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.standin._track(self.connection, add=False)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        body: Any = None
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as err:
                self.standin._bad_json(self, str(err))
                return
        try:
            self.standin._route(self, method, self.path.split("?", 1)[0], body)
        except OSError:
            # The client gave up (its timeout) or the stand-in stopped: no one to answer.
            self.close_connection = True

    # -- writing answers --
    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json; charset=utf-8",
                        headers)

    def send_bytes(self, status: int, data: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def send_chunked_lines(self, status: int, lines: list[str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = line.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        """Close the connection without a word: the client sees a disconnect."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    """A client that hangs up while an answer is still being written (the ollama client
    stops reading a pull stream at its error line) is no error of the stand-in's: nothing is
    printed, where socketserver would print a traceback into the test's captured stderr."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _StandInServer:
    """Starts and stops a ThreadingHTTPServer; subclasses route the requests."""

    url_suffix = ""

    def __init__(self, reply: Reply | None, logprobs: bool = True):
        self.reply: Reply = reply or book_judge
        self.logprobs = logprobs  # False: a server that ignores a request for logprobs
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle --
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self) -> None:
        handler = type("StandInHandler", (_Handler,), {"standin": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True  # a handler stuck in a delay must not block exit
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{self.url_suffix}"
        # A short poll interval: stop() waits for one poll, and tests start many stand-ins.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name=f"{type(self).__name__}:{port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open connection, so the server is really down."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._server = None

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)

    # -- helpers for subclasses --
    def _record(self, body: dict) -> None:
        with self._lock:
            self.requests.append(body)

    def _answer_of(self, body: dict) -> str | StandInFailure:
        """Ask the reply function; a reply function that raises is answered with HTTP 500
        so that a bug in a test's reply shows up as a server error, not a hang."""
        try:
            answer = self.reply(body)
        except Exception as err:  # noqa: BLE001 - reported to the client instead
            return StandInFailure(500, f"stand-in reply function raised {err!r}")
        if not isinstance(answer, (str, WithLogprobs, StandInFailure)):
            return StandInFailure(500, f"stand-in reply function returned {answer!r}")
        return answer

    def _logprobs_of(self, body: dict, answer: "str | WithLogprobs") -> list[dict] | None:
        """The answer's log-probabilities when the request asks and this server sends them."""
        if not (self.logprobs and body.get("logprobs")):
            return None
        return logprob_entries(answer, int(body.get("top_logprobs") or 0))

    def _send_failure(self, handler: _Handler, failure: StandInFailure) -> None:
        if failure.delay:
            self._stopping.wait(failure.delay)  # cut short when the stand-in stops
        if failure.drop:
            handler.drop()
            return
        if failure.raw:
            handler.send_bytes(failure.status, failure.body.encode(), "text/plain; charset=utf-8")
        else:
            handler.send_json(failure.status, self._error_payload(failure.status, failure.body))

    def _error_payload(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def _bad_json(self, handler: _Handler, detail: str) -> None:
        handler.send_json(400, self._error_payload(400, f"invalid JSON body: {detail}"))

    def _route(self, handler: _Handler, method: str, path: str, body: Any) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# Ollama


def _fixed_digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(f"evalpipe stand-in model {name}".encode()).hexdigest()


# Ollama's /api/tags gives a model's digest as 64 hex digits (the SHA-256 of its manifest),
# without the "sha256:" prefix of blob names.
DEFAULT_OLLAMA_MODELS = {"llama3:latest": _fixed_digest("llama3:latest")}
OLLAMA_VERSION = "0.6.5"


def ollama_name(name: str) -> str:
    """A model name as Ollama compares them: lower-case, without the default registry and
    namespace, with the default tag ":latest" ("llama3" is "llama3:latest")."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


class OllamaStandIn(_StandInServer):
    """Speaks Ollama's API: GET /, /api/version, /api/tags, /api/ps; POST /api/show,
    /api/chat and /api/generate (non-streaming, or NDJSON when "stream" is true), and
    /api/pull: a model of `pullable` (name -> digest) is "downloaded" in a few progress lines
    and then listed; any other name gets the registry's error in the stream, as Ollama sends
    it. Every pull's model name is kept in `pulls`."""

    def __init__(self, reply: Reply | None = None, *, models: dict[str, str] | None = None,
                 stream_ok: bool = True, context_length: int = 8192, cut: str = "half",
                 pullable: dict[str, str] | None = None, logprobs: bool = True):
        super().__init__(reply, logprobs)
        self.pullable: dict[str, str] = dict(pullable or {})
        self.pulls: list[str] = []
        self.models: dict[str, str] = dict(DEFAULT_OLLAMA_MODELS if models is None else models)
        self.stream_ok = stream_ok  # False: a streaming chat request gets HTTP 400
        # The models' context length (/api/show): num_ctx is capped to it, as Ollama does. A
        # prompt longer than the request's num_ctx (2048 when not sent) is cut silently as
        # tokens_read says, and prompt_eval_count reports what is left.
        self.context_length = context_length
        self.cut = cut

    def _error_payload(self, status: int, message: str) -> Any:
        return {"error": message}

    def _find_model(self, name: str) -> str | None:
        wanted = ollama_name(name)
        for known in self.models:
            if ollama_name(known) == wanted:
                return known
        return None

    def _tag_entry(self, name: str) -> dict:
        return {
            "name": name,
            "model": name,
            "modified_at": "2024-05-20T10:00:00.000000000Z",
            "size": 4661224676,
            "digest": self.models[name],
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama"], "parameter_size": "8.0B",
                        "quantization_level": "Q4_0"},
        }

    def _route(self, handler: _Handler, method: str, path: str, body: Any) -> None:
        if method in ("GET", "HEAD") and path == "/":
            handler.send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif method == "GET" and path == "/api/version":
            handler.send_json(200, {"version": OLLAMA_VERSION})
        elif method == "GET" and path == "/api/tags":
            handler.send_json(200, {"models": [self._tag_entry(n) for n in self.models]})
        elif method == "GET" and path == "/api/ps":
            handler.send_json(200, {"models": []})
        elif method == "POST" and path == "/api/show":
            self._show(handler, body)
        elif method == "POST" and path == "/api/pull":
            self._pull(handler, body)
        elif method == "POST" and path in ("/api/chat", "/api/generate"):
            self._generate(handler, path, body)
        else:  # Go's net/http answer to an unknown route
            handler.send_bytes(404, b"404 page not found", "text/plain; charset=utf-8")

    def _pull(self, handler: _Handler, body: dict) -> None:
        """POST /api/pull, streamed as Ollama streams it (docs/api.md "Pull a Model")."""
        name = body.get("model") or body.get("name") or ""
        self.pulls.append(name)
        known = next((n for n in self.pullable if ollama_name(n) == ollama_name(name)), None)
        if known is None:
            lines = [{"status": "pulling manifest"},
                     {"error": "pull model manifest: file does not exist"}]
        else:
            layer, total = "sha256:" + "ab" * 32, 4_661_211_808
            lines = [{"status": "pulling manifest"},
                     *({"status": f"pulling {layer[7:19]}", "digest": layer, "total": total,
                        "completed": done} for done in (0, total // 2, total)),
                     {"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                     {"status": "success"}]
            self.models[known] = self.pullable[known]
        if body.get("stream", True):
            handler.send_chunked_lines(200, [json.dumps(line) + "\n" for line in lines],
                                       "application/x-ndjson")
        elif known is None:
            handler.send_json(500, lines[-1])
        else:
            handler.send_json(200, lines[-1])

    def _show(self, handler: _Handler, body: dict) -> None:
        requested = body.get("model") or body.get("name") or ""
        known = self._find_model(requested) if requested else None
        if known is None:
            handler.send_json(404, {"error": f"model '{requested}' not found"})
            return
        handler.send_json(200, {
            "license": "stand-in licence",
            "modelfile": f"# Modelfile generated by the evalpipe stand-in\nFROM {known}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": self._tag_entry(known)["details"],
            "model_info": {"general.architecture": "llama", "general.parameter_count": 8030261248,
                           "llama.context_length": self.context_length},
            "capabilities": ["completion"],
            "modified_at": "2024-05-20T10:00:00.000000000Z",
        })

    def _prompt_eval_count(self, body: dict) -> int:
        num_ctx = (body.get("options") or {}).get("num_ctx") or OLLAMA_DEFAULT_NUM_CTX
        return tokens_read(prompt_tokens(body), min(num_ctx, self.context_length), self.cut)

    def _generate(self, handler: _Handler, path: str, body: dict) -> None:
        self._record(body)
        requested = body.get("model") or ""
        if not requested:
            handler.send_json(400, {"error": "model is required"})
            return
        if self._find_model(requested) is None:
            handler.send_json(404, {"error": f'model "{requested}" not found, '
                                             "try pulling it first"})
            return
        stream = body.get("stream", True)  # Ollama streams unless told not to
        if stream and not self.stream_ok:
            handler.send_json(400, {"error": "this stand-in does not stream"})
            return
        answer = self._answer_of(body)
        if isinstance(answer, StandInFailure):
            self._send_failure(handler, answer)
            return
        chat = path == "/api/chat"
        logprobs = self._logprobs_of(body, answer)
        answer = answer.text if isinstance(answer, WithLogprobs) else answer
        words = len(answer.split())
        final = {
            "model": requested, "created_at": _now_rfc3339(),
            "done": True, "done_reason": "stop",
            "total_duration": 1_000_000, "load_duration": 100_000,
            "prompt_eval_count": self._prompt_eval_count(body), "prompt_eval_duration": 500_000,
            "eval_count": words, "eval_duration": 400_000,
        }
        if not stream:
            if chat:
                final["message"] = {"role": "assistant", "content": answer}
            else:
                final["response"] = answer
            if logprobs is not None:
                final["logprobs"] = logprobs
            handler.send_json(200, final)
            return
        lines = []
        for piece in re.findall(r"\S+\s*|\s+", answer):
            part = {"model": requested, "created_at": _now_rfc3339(), "done": False}
            if chat:
                part["message"] = {"role": "assistant", "content": piece}
            else:
                part["response"] = piece
            lines.append(json.dumps(part) + "\n")
        if chat:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        lines.append(json.dumps(final) + "\n")
        handler.send_chunked_lines(200, lines, "application/x-ndjson")


# ------------------------------------------------------------------------------------------
# OpenAI


DEFAULT_OPENAI_MODELS = ["gpt-4o-mini"]
OPENAI_MODEL_OWNER = "system"


class OpenAIStandIn(_StandInServer):
    """Speaks OpenAI's API under /v1: GET /v1/models, GET /v1/models/{id},
    POST /v1/chat/completions (non-streaming). With api_key set, every request needs
    "Authorization: Bearer <api_key>" or gets 401.

    A model object's `created` is int(clock()), the time of the request, as vLLM and
    llama.cpp's llama-server report it; `clock` (default time.time) lets a test make it
    change on every request. `owned_by` is `owner`; with `meta` (a dict) every model object
    also carries it, as llama-server's do. usage.prompt_tokens counts the prompt as
    `prompt_tokens` does; with `context` set, a longer prompt is cut silently as Ollama's /v1
    endpoint does (`tokens_read`, cut "half") and the count says what is left."""

    url_suffix = "/v1"

    def __init__(self, reply: Reply | None = None, *, models: list[str] | None = None,
                 api_key: str | None = None, owner: str = OPENAI_MODEL_OWNER,
                 meta: dict | None = None, clock: Callable[[], float] = time.time,
                 context: int | None = None, logprobs: bool = True):
        super().__init__(reply, logprobs)
        self.context = context
        self.models: list[str] = list(DEFAULT_OPENAI_MODELS if models is None else models)
        self.api_key = api_key
        self.owner = owner
        self.meta = meta
        self.clock = clock
        self._completion_count = 0

    def _error_payload(self, status: int, message: str, *, type_: str = "",
                       param: str | None = None, code: str | None = None) -> Any:
        if not type_:
            type_ = "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def _model_object(self, name: str) -> dict:
        entry = {"id": name, "object": "model", "created": int(self.clock()),
                 "owned_by": self.owner}
        if self.meta is not None:
            entry["meta"] = self.meta
        return entry

    def _authorized(self, handler: _Handler) -> bool:
        if self.api_key is None:
            return True
        header = handler.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return True
        given = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        if given:
            message = f"Incorrect API key provided: {given[:3]}***{given[-4:]}."
            code = "invalid_api_key"
        else:
            message = ("You didn't provide an API key. You need to provide your API key in "
                       "an Authorization header using Bearer auth (i.e. Authorization: "
                       "Bearer YOUR_KEY).")
            code = None
        handler.send_json(401, self._error_payload(401, message, code=code))
        return False

    def _model_not_found(self, handler: _Handler, name: str) -> None:
        handler.send_json(404, self._error_payload(
            404, f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found"))

    def _route(self, handler: _Handler, method: str, path: str, body: Any) -> None:
        if not path.startswith("/v1/"):
            handler.send_json(404, self._error_payload(404, f"Invalid URL ({method} {path})"))
            return
        if not self._authorized(handler):
            return
        if method == "GET" and path == "/v1/models":
            handler.send_json(200, {"object": "list",
                                    "data": [self._model_object(m) for m in self.models]})
        elif method == "GET" and path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
            if name in self.models:
                handler.send_json(200, self._model_object(name))
            else:
                self._model_not_found(handler, name)
        elif method == "POST" and path == "/v1/chat/completions":
            self._chat(handler, body)
        else:
            handler.send_json(404, self._error_payload(404, f"Invalid URL ({method} {path})"))

    def _chat(self, handler: _Handler, body: dict) -> None:
        self._record(body)
        model = body.get("model")
        if not model or not body.get("messages"):
            missing = "model" if not model else "messages"
            handler.send_json(400, self._error_payload(
                400, f"Missing required parameter: '{missing}'.", param=missing,
                code="missing_required_parameter"))
            return
        if model not in self.models:
            self._model_not_found(handler, model)
            return
        if body.get("stream"):
            handler.send_json(400, self._error_payload(400, "this stand-in does not stream",
                                                       param="stream"))
            return
        answer = self._answer_of(body)
        if isinstance(answer, StandInFailure):
            self._send_failure(handler, answer)
            return
        logprobs = self._logprobs_of(body, answer)
        answer = answer.text if isinstance(answer, WithLogprobs) else answer
        with self._lock:
            self._completion_count += 1
            number = self._completion_count
        read = tokens_read(prompt_tokens(body), self.context, "half")
        completion_tokens = len(answer.split())
        handler.send_json(200, {
            "id": f"chatcmpl-standin{number:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "logprobs": None if logprobs is None else {"content": logprobs,
                                                           "refusal": None},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": read, "completion_tokens": completion_tokens,
                      "total_tokens": read + completion_tokens},
            "system_fingerprint": "fp_standin",
        })
