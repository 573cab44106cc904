"""The OpenAI-compatible judge backend, through the official `openai` client: OpenAI
itself or any server of chat completions (vLLM, llama.cpp's server, LM Studio, Ollama's /v1).

Request options: seed, temperature, top_p, max_completion_tokens, and max_tokens (or
num_predict, sent as max_tokens); Ollama-only keys such as num_ctx are not sent.
Log-probabilities (judge.scoring = "expected"): `logprobs: true, top_logprobs: N`, answered in
`choices[0].logprobs.content[i].top_logprobs`.
"""

from __future__ import annotations

import os

from evalpipe.config import mask_url_password
from evalpipe.io import sha256_json
from evalpipe.judging.backends.base import (
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    Reply,
    TransientJudgeError,
    UnreachableJudgeError,
    _one_line,
    chat_extras,
    judge_hosts,
    openai_logprobs,
)
from evalpipe.judging.backends.pool import one_or_pool

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


def make_backend(judge_config):
    """One OpenAIBackend per host of the [judge] section (a HostPool when several)."""
    urls = [h.strip().rstrip("/") for h in judge_hosts(
        judge_config.hosts, judge_config.host, "OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL)]
    return one_or_pool([OpenAIBackend(url, judge_config.model, api_key=judge_config.api_key,
                                      timeout=judge_config.timeout) for url in urls])



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
                **chat_extras(request.options, OPENAI_OPTION_NAMES, request.schema,
                              request.top_logprobs),
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
        logprobs = getattr(choices[0], "logprobs", None)
        return Reply(message.content, getattr(usage, "prompt_tokens", None), None,
                     openai_logprobs(getattr(logprobs, "content", None))
                     if request.top_logprobs else None)

    def close(self) -> None:
        self.client.close()
