"""The stage contract, stated once: what every stage module (evalpipe/stages/<name>.py)
provides to the stage cache (evalpipe/stages/pipeline.py).

A stage is a module, not a class: the cache imports it only when it must, so that `status`
never imports torch. The module's functions are the contract:

    needs(config) -> tuple[str, ...]        the stages whose outputs it reads
    config_key(config) -> dict              the configuration values whose change reruns it
    inputs(config, paths) -> {name: Path}   the files it reads, hashed into its manifest
    outputs(config) -> tuple[str, ...]      the files it writes in results/<run>/<stage>/
    run(config, paths) -> None              reads its inputs, writes its outputs, nothing else

and three optional hooks, looked up by name:

    fetch(config, paths)                    make remote inputs local before deciding
                                            (prepare downloads its source here)
    identity(config, paths) -> dict         values that decide the outputs but are neither
                                            configuration nor files (the judge's digest), or
                                            `evalpipe.manifest.Unchecked` when unknown now
    incomplete(config, paths) -> str | None after a run: what the outputs still lack
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from evalpipe.config import RunConfig
from evalpipe.paths import RunPaths

REQUIRED = ("needs", "config_key", "inputs", "outputs", "run")
OPTIONAL_HOOKS = ("fetch", "identity", "incomplete")


class StageModule(Protocol):
    """A stage module as the cache sees it (module docstring)."""

    def needs(self, config: RunConfig) -> tuple[str, ...]: ...

    def config_key(self, config: RunConfig) -> dict[str, Any]: ...

    def inputs(self, config: RunConfig, paths: RunPaths) -> dict[str, Path]: ...

    def outputs(self, config: RunConfig) -> tuple[str, ...]: ...

    def run(self, config: RunConfig, paths: RunPaths) -> None: ...


def breaches(module) -> list[str]:
    """The functions of REQUIRED that `module` lacks (empty: it keeps the contract)."""
    return [name for name in REQUIRED if not callable(getattr(module, name, None))]
