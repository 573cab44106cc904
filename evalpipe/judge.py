"""Stage 4, judge: an LLM scores every response."""

from __future__ import annotations

from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.pipeline import NotBuiltYet, RunPaths


def needs(config: RunConfig) -> tuple[str, ...]:
    return ("generate",)


def config_key(config: RunConfig) -> dict:
    # How fast and where the judge is asked does not change its answers.
    ignored = ("concurrency", "timeout", "retries", "cache", "hosts", "host", "api_key")
    return {k: v for k, v in config.section("judge").items() if k not in ignored}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    return {"generate/responses.jsonl": paths / "generate/responses.jsonl"}


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("scores.jsonl", "summary.json")


def run(config: RunConfig, paths: RunPaths) -> None:
    raise NotBuiltYet("judge: not built yet (see the judge issue)")
