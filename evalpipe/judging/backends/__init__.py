"""The judge backends: one module per backend behind one interface, found by name.

Every backend implements `JudgeBackend` (base.py): preflight() says who judges (a
`JudgeIdentity`), ask() sends one prompt and returns a `Reply`, close() lets go. judge.backend
names one of them:
  ollama    ollama.py    the official `ollama` client (host from judge.host / OLLAMA_HOST)
  openai    openai.py    the official `openai` client, any OpenAI-compatible server
  llamacpp  llamacpp.py  a GGUF file run in-process through `xllamacpp` (optional extra)
  mock      mock.py      word overlap in-process: a test double, never for real scores
Several servers of one backend (judge.hosts) form a `HostPool` (pool.py).

A backend's module is imported only when that backend is used (or one of its names is asked
for here), so a missing optional package (xllamacpp, say) fails only for its own backend.
Adding a backend: a module with a `make_backend(judge_config)` function, one line in
BACKENDS, and its name in evalpipe.config.CHOICES (tests/judging/test_mock_backend.py checks
that the two lists agree).
"""

from __future__ import annotations

import importlib

from evalpipe.judging.backends.base import (
    SCHEMA_NAME,
    JudgeBackend,
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    ModelMissingError,
    Reply,
    TransientJudgeError,
    UnreachableJudgeError,
    chat_extras,
    judge_hosts,
)

# judge.backend -> the module whose make_backend(judge_config) builds it.
BACKENDS = {
    "ollama": "evalpipe.judging.backends.ollama",
    "openai": "evalpipe.judging.backends.openai",
    "llamacpp": "evalpipe.judging.backends.llamacpp",
    "mock": "evalpipe.judging.backends.mock",
}

# Names defined in a backend's own module, re-exported here on first use (PEP 562).
_LAZY_NAMES = {
    "HostPool": "evalpipe.judging.backends.pool",
    "OllamaBackend": "evalpipe.judging.backends.ollama",
    "DEFAULT_OLLAMA_HOST": "evalpipe.judging.backends.ollama",
    "OLLAMA_DEFAULT_PORT": "evalpipe.judging.backends.ollama",
    "ollama_url": "evalpipe.judging.backends.ollama",
    "OpenAIBackend": "evalpipe.judging.backends.openai",
    "DEFAULT_OPENAI_BASE_URL": "evalpipe.judging.backends.openai",
    "OPENAI_OPTION_NAMES": "evalpipe.judging.backends.openai",
    "openai_digest": "evalpipe.judging.backends.openai",
    "LlamaCppBackend": "evalpipe.judging.backends.llamacpp",
    "LLAMACPP_DEFAULT_N_CTX": "evalpipe.judging.backends.llamacpp",
    "LLAMACPP_REQUEST_OPTIONS": "evalpipe.judging.backends.llamacpp",
    "MockBackend": "evalpipe.judging.backends.mock",
}

# The public names, those of base.py and the _LAZY_NAMES (sorted).
__all__ = [
    "BACKENDS",
    "DEFAULT_OLLAMA_HOST",
    "DEFAULT_OPENAI_BASE_URL",
    "LLAMACPP_DEFAULT_N_CTX",
    "LLAMACPP_REQUEST_OPTIONS",
    "OLLAMA_DEFAULT_PORT",
    "OPENAI_OPTION_NAMES",
    "SCHEMA_NAME",
    "HostPool",
    "JudgeBackend",
    "JudgeError",
    "JudgeIdentity",
    "JudgeRequest",
    "ModelMissingError",
    "LlamaCppBackend",
    "MockBackend",
    "OllamaBackend",
    "OpenAIBackend",
    "Reply",
    "TransientJudgeError",
    "UnreachableJudgeError",
    "chat_extras",
    "judge_hosts",
    "make_backend",
    "ollama_url",
    "openai_digest",
]


def make_backend(judge_config) -> JudgeBackend:
    """The backend for a run's [judge] section (an `evalpipe.config.JudgeConfig`)."""
    name = judge_config.backend
    if name not in BACKENDS:
        raise JudgeError(f"judge.backend: unknown backend {name!r} (known: "
                         + ", ".join(repr(known) for known in BACKENDS) + ")")
    return importlib.import_module(BACKENDS[name]).make_backend(judge_config)


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
