"""The Ollama judge backend, through the official `ollama` client (host from judge.host,
judge.hosts or OLLAMA_HOST).

Request options: all judge.options as given, inside "options" (max_tokens is renamed
num_predict). Log-probabilities (judge.scoring = "expected"): `logprobs: true, top_logprobs: N`
in the chat request, answered by `logprobs: [{token, logprob, top_logprobs: [...]}, ...]`
(Ollama 0.12.11 and later; older servers send none).
"""

from __future__ import annotations

import sys
import urllib.parse

from evalpipe.config import mask_url_password
from evalpipe.judging.backends.base import (
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    ModelMissingError,
    Reply,
    TransientJudgeError,
    UnreachableJudgeError,
    _one_line,
    judge_hosts,
    openai_logprobs,
)
from evalpipe.judging.backends.pool import one_or_pool

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
OLLAMA_DEFAULT_PORT = 11434


def make_backend(judge_config):
    """One OllamaBackend per host of the [judge] section (a HostPool when several)."""
    urls = [ollama_url(h) for h in judge_hosts(judge_config.hosts, judge_config.host,
                                               "OLLAMA_HOST", DEFAULT_OLLAMA_HOST)]
    return one_or_pool([OllamaBackend(url, judge_config.model, timeout=judge_config.timeout)
                        for url in urls])


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
        raise ModelMissingError(f"Ollama at {self.url} has no model '{self.model}': "
                                f"run 'ollama pull {self.model}'")

    def pull(self) -> None:
        """`ollama pull MODEL` through the client's streamed pull: one progress bar per layer
        (tqdm, on stderr), then the model is there. An error in the stream (no such model in
        the registry, no network) is one line naming the server and the model."""
        import httpx
        import ollama
        from tqdm import tqdm

        print(f"judge: pulling {self.model} into Ollama at {self.url} (judge.pull = true)",
              file=sys.stderr)
        bars: dict[str, tqdm] = {}
        try:
            for progress in self.client.pull(self.model, stream=True):
                if progress.digest and progress.total:
                    bar = bars.get(progress.digest)
                    if bar is None:
                        bar = bars[progress.digest] = tqdm(
                            total=progress.total, unit="B", unit_scale=True,
                            desc=f"pull {progress.digest.removeprefix('sha256:')[:12]}")
                    bar.update((progress.completed or 0) - bar.n)
        except (ConnectionError, httpx.TransportError):
            raise self._unreachable() from None
        except ollama.ResponseError as err:
            raise JudgeError(f"Ollama at {self.url} could not pull '{self.model}': "
                             f"{_one_line(err.error)}") from None
        finally:
            for bar in bars.values():
                bar.close()

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
                # Ollama 0.12.11 and later; an older server ignores them and sends none
                **({"logprobs": True, "top_logprobs": request.top_logprobs}
                   if request.top_logprobs else {}),
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
                     int(num_ctx) if num_ctx is not None else None,
                     openai_logprobs(response.logprobs) if request.top_logprobs else None)

    def close(self) -> None:
        self.client.close()
