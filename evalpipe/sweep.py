"""Several base models in one config (`model.bases = [...]`): one run per base, then a comparison.

    [model]
    bases = ["gpt2", "gpt2-medium", "checkpoints/mine.pth"]

`evalpipe evaluate --config FILE --run NAME` (hence `make evaluate`) then makes one ordinary run
per base, `results/NAME--<slug>/`, whose config is the file's with `model.base` set to that base
(and `model.bases` emptied, so each sub-run is a plain one-base run, with the base in its
config.toml). The stage cache decides, run by run, what needs doing: a base already fine-tuned
and generated with the same settings runs nothing again. Then:

  judge.mode = "together"  each sub-run goes to `generate`; all are judged together
                           (evalpipe/judging/together.py) by `compare --mode together`
  judge.mode = "single"    each sub-run goes through `aggregate` (judged alone, the book's way);
                           then `compare` of the sub-runs

and the comparison is written to `results/compare-NAME/` (docs/compare.md). Other stage commands
(`prepare` ... `aggregate`, `clean`) act on every sub-run; `status` lists every sub-run and the
comparison. With `model.bases` empty nothing here is used: one run, as always.

The slug is the base spec made into a folder name: "gpt2-medium" stays, "hf:me/mine" becomes
"hf-me-mine", a local file or folder gives its name without suffix ("checkpoints/mine.pth" ->
"mine"). Two bases that would get the same slug each get 8 hex digits of the SHA-256 of their
spec appended.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from evalpipe.config import ConfigError, RunConfig
from evalpipe.paths import RunPaths
from evalpipe.stages.pipeline import Pipeline, Status

SEPARATOR = "--"  # results/<run>--<slug>/


@dataclass
class SubRun:
    """One base model's run."""

    base: str  # the spec as written in model.bases
    name: str  # the run's folder name: <run>--<slug>
    config: RunConfig


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "base"


def base_slug(spec: str) -> str:
    """A folder-name part for a base spec (module doc)."""
    is_path = "/" in spec and not spec.startswith("hf:") or Path(spec).expanduser().exists()
    if is_path:
        path = Path(spec.rstrip("/")).expanduser()
        return _safe(path.name if path.is_dir() else path.stem)
    return _safe(spec)


def sub_runs(config: RunConfig, run: str) -> list[SubRun]:
    """One run per base of model.bases, in the order listed."""
    bases = config.model.bases
    twice = sorted({base for base in bases if bases.count(base) > 1})
    if twice:
        raise ConfigError(f"model.bases: {twice[0]!r} is listed twice")
    slugs = [base_slug(base) for base in bases]
    runs = []
    for base, slug in zip(bases, slugs):
        if slugs.count(slug) > 1:
            slug = f"{slug}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
        sub = copy.deepcopy(config)
        sub.model.base = base
        sub.model.bases = []
        runs.append(SubRun(base, f"{run}{SEPARATOR}{slug}", sub))
    return runs


def sub_target(config: RunConfig) -> str:
    """How far each sub-run goes before the comparison."""
    return "generate" if config.judge.mode == "together" else "aggregate"


def _paths(paths: RunPaths, name: str) -> RunPaths:
    return RunPaths(results=paths.results, run=name, datasets=paths.datasets)


def evaluate(config: RunConfig, paths: RunPaths, *, echo=print) -> Path:
    """Bring every sub-run up to date, then compare them into results/compare-<run>/."""
    from evalpipe.compare import compare_runs, print_leaderboard

    subs = sub_runs(config, paths.run)
    target = sub_target(config)
    for sub in subs:
        echo(f"== run {sub.name} (model.base = {sub.base})")
        Pipeline(sub.config, _paths(paths, sub.name), echo=echo).ensure(target)
    echo(f"== compare-{paths.run} ({len(subs)} base models, judge.mode = "
         f"{config.judge.mode})")
    together = config.judge.mode == "together"
    # The bootstrap settings are this config's [aggregate] section: a sub-run's config.toml is
    # rewritten only when one of its stages runs, so it may hold an earlier file's settings.
    out = compare_runs([sub.name for sub in subs], paths.results, paths.run,
                       mode=config.judge.mode, config=config if together else None,
                       aggregate=config.aggregate)
    print_leaderboard(out)
    return out


def each(config: RunConfig, paths: RunPaths, action, *, echo=print) -> None:
    """`action(pipeline)` for every sub-run, announcing each."""
    for sub in sub_runs(config, paths.run):
        echo(f"== run {sub.name} (model.base = {sub.base})")
        action(Pipeline(sub.config, _paths(paths, sub.name), echo=echo))


def status_lines(config: RunConfig, paths: RunPaths) -> list[str]:
    """Every sub-run's stages, then the together judgment (if any) and the comparison."""
    subs = sub_runs(config, paths.run)
    target = sub_target(config)
    lines = []
    all_done = True
    for sub in subs:
        pipeline = Pipeline(sub.config, _paths(paths, sub.name))
        lines.append(f"run {sub.name} (model.base = {sub.base}) in {pipeline.paths.root}")
        statuses = pipeline.status(target)
        all_done = all_done and all(s.state == "done" for s in statuses)
        lines += [status.line() for status in statuses]
    out = paths.results / f"compare-{paths.run}"
    lines.append(f"comparison compare-{paths.run} in {out}")
    if config.judge.mode == "together":
        lines.append(together_status(config, paths, subs, all_done).line())
    board = out / "leaderboard.json"
    if board.exists():
        lines.append(Status("compare", "done", "leaderboard.json written; "
                                               "'evalpipe evaluate' refreshes it").line())
    else:
        lines.append(Status("compare", "missing", "never run").line())
    return lines


def together_status(config: RunConfig, paths: RunPaths, subs: list[SubRun],
                    all_done: bool) -> Status:
    """The together judgment of judge.mode = "together" (`all_done`: every sub-run's responses
    are up to date): done, stale or missing."""
    from evalpipe.judging.together import (
        FOLDER,
        freshness,
        load_contenders,
        output_names,
        together_identity,
        together_key,
    )

    out = paths.results / f"compare-{paths.run}"
    if all_done:
        contenders = load_contenders(paths.results, [sub.name for sub in subs])
        state, reason = freshness(out / FOLDER, together_key(config.judge, contenders),
                                  output_names(contenders), together_identity(config.judge))
    else:
        state, reason = "missing", "the runs' responses are not all made yet"
        if (out / FOLDER).exists():
            state = "stale"
    return Status("together", state, reason)
