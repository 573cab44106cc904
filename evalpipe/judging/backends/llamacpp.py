"""The llama.cpp judge backend: a GGUF file run in-process through `xllamacpp` (the optional
extra `evalpipe[llamacpp]`).

Request options: seed, temperature, top_p, top_k, min_p, repeat_penalty, max_tokens (or
num_predict) per request; num_ctx (default 2048) and num_thread when loading.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from evalpipe.io import sha256_file_remembered
from evalpipe.judging.backends.base import (
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    Reply,
    _one_line,
    chat_extras,
    openai_logprobs,
)

LLAMACPP_DEFAULT_N_CTX = 2048


def make_backend(judge_config):
    """The GGUF file named by judge.model (hosts do not apply)."""
    return LlamaCppBackend(judge_config.model, options=judge_config.options)



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
                **chat_extras(request.options, LLAMACPP_REQUEST_OPTIONS, request.schema,
                             request.top_logprobs)}
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
        logprobs = reply["choices"][0].get("logprobs")
        return Reply(text, prompt_tokens if isinstance(prompt_tokens, int) else None,
                     self.n_ctx,
                     openai_logprobs(logprobs.get("content")) if request.top_logprobs
                     and isinstance(logprobs, dict) else None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._server = None  # the C++ server stops when its last reference goes
