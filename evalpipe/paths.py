"""Where a run's files live: results/<run>/<stage>/... and the shared datasets folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files live: results/<run>/<stage>/..., and the shared datasets folder."""

    results: Path
    run: str
    datasets: Path = Path("datasets")

    @property
    def root(self) -> Path:
        return self.results / self.run

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def __truediv__(self, relative: str) -> Path:
        """paths / "prepare/test.jsonl" -> results/<run>/prepare/test.jsonl"""
        return self.root / relative


def default_paths(run: str, results: str | None = None, datasets: str | None = None) -> RunPaths:
    return RunPaths(
        results=Path(results or os.environ.get("EVALPIPE_RESULTS", "results")),
        run=run,
        datasets=Path(datasets or os.environ.get("EVALPIPE_DATASETS", "datasets")),
    )
