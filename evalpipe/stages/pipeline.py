"""The stage cache: which stages must run, in what order, and the manifests that decide it.

Each stage declares the configuration it depends on, the files it reads and the files it writes.
After a stage finishes, `manifest.json` beside its outputs records the SHA-256 of every input and
output and a hash of that configuration. A stage is up to date when all three still match, by
content, never by timestamp. Running a stage first brings the stages it needs up to date, as Make
would; a rerun whose outputs come out byte-identical leaves the stages after it untouched.

What a stage module provides is the stage contract, stated in evalpipe/stages/contract.py.
Two of its optional hooks refine the decision:
- `identity(config, paths) -> dict`: values that decide the outputs but are neither configuration
  nor input files (the judge: the served model's digest, a hash of the prompt text, the parsing
  rule's version). They are recorded in the manifest and compared like the configuration; a
  value the stage cannot find out now is `Unchecked(why)`: not guessed, the status says so.
- `incomplete(config, paths) -> str | None`, asked after a run: what the outputs still lack
  (the judge: "3 errors"). The stage is then `incomplete`: it runs again, and the stages after
  it are stale, until a run leaves nothing missing.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe import __version__
from evalpipe.config import RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import sha256_file_remembered, sha256_json, write_json, write_text
from evalpipe.manifest import MANIFEST, identity_changes, recorded_identity
from evalpipe.paths import RunPaths
from evalpipe.stages.contract import StageModule, breaches


@dataclass(frozen=True)
class Stage:
    """What the cache needs to know about a stage: the functions of the stage contract
    (evalpipe/stages/contract.py), looked up lazily in the stage's module
    (`evalpipe.stages.<name>`), so `status` imports torch only when a key needs it (the
    device that finetune.dtype = "auto" resolves on)."""

    name: str

    @property
    def module(self) -> StageModule:
        module = importlib.import_module(f"evalpipe.stages.{self.name}")
        missing = breaches(module)
        if missing:
            raise TypeError(f"{module.__name__} breaks the stage contract "
                            f"(evalpipe/stages/contract.py): no {', '.join(missing)}")
        return module

    def needs(self, config: RunConfig) -> tuple[str, ...]:
        return tuple(self.module.needs(config))

    def config_key(self, config: RunConfig) -> dict[str, Any]:
        """The configuration values whose change must rerun this stage."""
        return self.module.config_key(config)

    def inputs(self, config: RunConfig, paths: RunPaths) -> dict[str, Path]:
        return self.module.inputs(config, paths)

    def outputs(self, config: RunConfig) -> tuple[str, ...]:
        return tuple(self.module.outputs(config))

    def fetch(self, config: RunConfig, paths: RunPaths) -> None:
        """Make remote inputs local before deciding (prepare downloads its source here)."""
        fetch = getattr(self.module, "fetch", None)
        if fetch is not None:
            fetch(config, paths)

    def run(self, config: RunConfig, paths: RunPaths) -> None:
        self.module.run(config, paths)

    def identity(self, config: RunConfig, paths: RunPaths) -> dict[str, Any]:
        """Values besides configuration and inputs whose change must rerun this stage (module
        docstring); {} for a stage without the hook."""
        identity = getattr(self.module, "identity", None)
        return dict(identity(config, paths)) if identity is not None else {}

    def incomplete(self, config: RunConfig, paths: RunPaths) -> str | None:
        """After a run: what its outputs still lack, or None when they are complete."""
        incomplete = getattr(self.module, "incomplete", None)
        return incomplete(config, paths) if incomplete is not None else None


STAGE_NAMES = ("prepare", "finetune", "generate", "judge", "aggregate")
STAGES = {name: Stage(name) for name in STAGE_NAMES}


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise EvalpipeError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})") from None


@dataclass
class Status:
    stage: str
    state: str  # "done", "stale", "missing" or "incomplete"
    reason: str

    def line(self) -> str:
        return f"{self.stage:<10} {self.state:<8} {self.reason}"



def read_manifest(paths: RunPaths, stage: str) -> dict | None:
    path = paths.stage_dir(stage) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # cut short or edited by hand: treated as never run


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


class Pipeline:
    """Runs the stages of one run, deciding from the manifests what really needs to run."""

    def __init__(self, config: RunConfig, paths: RunPaths, *, echo: Callable[[str], None] = print):
        self.config = config
        self.paths = paths
        self.echo = echo
        self.hashes = sha256_file_remembered  # a model file is read once, not per stage

    # -- decisions ---------------------------------------------------------------------------

    def own_status(self, stage: Stage) -> Status:
        """Done, stale, missing or incomplete, judged from this stage's manifest alone (and its
        identity hook)."""
        manifest = read_manifest(self.paths, stage.name)
        if manifest is None:
            return Status(stage.name, "missing", "never run")
        stage_dir = self.paths.stage_dir(stage.name)
        for name, digest in manifest.get("outputs", {}).items():
            path = stage_dir / name
            if not path.exists():
                return Status(stage.name, "stale", f"output {name} is missing")
            if self.hashes(path) != digest:
                return Status(stage.name, "stale", f"output {name} was changed by hand")
        key = stage.config_key(self.config)
        if sha256_json(key) != manifest.get("config_hash"):
            changed = _changed_keys(manifest.get("config", {}), key)
            return Status(stage.name, "stale", f"configuration changed: {', '.join(changed)}")
        inputs = stage.inputs(self.config, self.paths)
        recorded = manifest.get("inputs", {})
        if set(inputs) != set(recorded):
            return Status(stage.name, "stale", "its list of inputs changed")
        for name, path in inputs.items():
            if not path.exists():
                return Status(stage.name, "stale", f"input {name} ({path}) is missing")
            if self.hashes(path) != recorded[name]:
                return Status(stage.name, "stale", f"input {name} ({path}) changed")
        # Last: finding the identity out may ask a server.
        changed, unchecked = identity_changes(manifest.get("identity", {}),
                                              stage.identity(self.config, self.paths))
        if changed:
            return Status(stage.name, "stale", ", ".join(changed))
        not_checked = "".join(f"; {phrase}" for phrase in unchecked)
        if manifest.get("incomplete"):
            return Status(stage.name, "incomplete", manifest["incomplete"] + not_checked)
        return Status(stage.name, "done", f"finished {manifest.get('finished', '?')}"
                      + not_checked)

    def status(self, target: str = "aggregate") -> list[Status]:
        """Every stage `target` needs, and itself; a stage after a stale, missing or incomplete
        one is stale too."""
        statuses: dict[str, Status] = {}
        for name in self.stages_for(target):
            stage = get_stage(name)
            status = self.own_status(stage)
            if status.state == "done":
                for need in stage.needs(self.config):
                    if statuses[need].state != "done":
                        status = Status(name, "stale", f"{need} is {statuses[need].state}")
                        break
            statuses[name] = status
        return list(statuses.values())

    def stages_for(self, target: str) -> list[str]:
        """The stages `target` depends on, directly or not, and itself, in running order."""
        order: list[str] = []

        def visit(name: str) -> None:
            for need in get_stage(name).needs(self.config):
                visit(need)
            if name not in order:
                order.append(name)

        visit(target)
        return order

    # -- running -----------------------------------------------------------------------------

    def ensure(self, target: str, *, force: bool = False) -> None:
        """Bring `target` up to date, running the stages it needs first if they are not."""
        for name in self.stages_for(target):
            self._ensure_one(get_stage(name), force=force and name == target)

    def _ensure_one(self, stage: Stage, *, force: bool) -> None:
        stage.fetch(self.config, self.paths)
        status = self.own_status(stage)
        if status.state == "done" and not force:
            self.echo(f"{stage.name}: up to date ({status.reason})")
            return
        why = "--force" if force and status.state == "done" else status.reason
        if status.state == "incomplete":
            why = f"incomplete: {why}"
        self.echo(f"{stage.name}: running ({why})")
        self.run_stage(stage)

    def run_stage(self, stage: Stage) -> None:
        stage_dir = self.paths.stage_dir(stage.name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        # A manifest left from an earlier run must not vouch for outputs being rewritten now.
        (stage_dir / MANIFEST).unlink(missing_ok=True)
        self.write_config()
        inputs = stage.inputs(self.config, self.paths)
        input_hashes = {}
        for name, path in inputs.items():
            if not path.exists():
                raise EvalpipeError(f"{stage.name}: input {name} not found: {path}")
            input_hashes[name] = self.hashes(path)
        key = stage.config_key(self.config)
        # Found out before the run: should it change during the run, the next status sees the
        # new value as a change, never the other way round.
        identity = recorded_identity(stage.identity(self.config, self.paths))
        started = _now()
        clock = time.monotonic()
        stage.run(self.config, self.paths)
        incomplete = stage.incomplete(self.config, self.paths)
        outputs = {}
        for name in stage.outputs(self.config):
            path = stage_dir / name
            if not path.exists():
                raise EvalpipeError(f"{stage.name}: finished without writing {path}")
            outputs[name] = self.hashes(path)
        write_json(
            stage_dir / MANIFEST,
            {
                "stage": stage.name,
                "evalpipe_version": __version__,
                "packages": package_versions(),
                "config_hash": sha256_json(key),
                "config": key,
                "inputs": {name: input_hashes[name] for name in sorted(input_hashes)},
                "input_paths": {name: str(path) for name, path in sorted(inputs.items())},
                "identity": identity,
                "outputs": outputs,
                "incomplete": incomplete,
                "started": started,
                "finished": _now(),
                "seconds": round(time.monotonic() - clock, 3),
            },
        )
        self.echo(f"{stage.name}: done in {time.monotonic() - clock:.1f} s")

    def write_config(self) -> None:
        """The resolved configuration of the run, with every default spelled out."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        path = self.paths.root / "config.toml"
        text = self.config.to_toml()
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)

    def clean(self, stage: str) -> list[Path]:
        names = STAGE_NAMES if stage == "all" else (get_stage(stage).name,)
        removed = []
        for name in names:
            folder = self.paths.stage_dir(name)
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
        return removed


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


KEY_PACKAGES = ("torch", "tiktoken", "ollama", "openai", "safetensors", "huggingface_hub",
                "pandas", "numpy", "xllamacpp")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


