"""Stage 5, aggregate: summary statistics, plots and an HTML report of the judged scores."""

from __future__ import annotations

from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.pipeline import NotBuiltYet, RunPaths


def needs(config: RunConfig) -> tuple[str, ...]:
    return ("judge",)


def config_key(config: RunConfig) -> dict:
    return config.section("aggregate")


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    return {"judge/scores.jsonl": paths / "judge/scores.jsonl"}


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("summary.json", "summary.md", "report.html")


def run(config: RunConfig, paths: RunPaths) -> None:
    raise NotBuiltYet("aggregate: not built yet (see the aggregate issue)")
