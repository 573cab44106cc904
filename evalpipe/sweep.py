"""Several base models or seeds in one config (`model.bases`, `finetune.seeds`): one run per
base and seed, then a comparison.

    [model]
    bases = ["gpt2", "gpt2-medium", "checkpoints/mine.pth"]

`evalpipe evaluate --config FILE --run NAME` (hence `make evaluate`) then makes one ordinary run
per base, `results/NAME--<slug>/`, whose config is the file's with `model.base` set to that base
(and `model.bases` emptied, so each sub-run is a plain one-base run, with the base in its
config.toml). The stage cache decides, run by run, what needs doing: a base already fine-tuned
and generated with the same settings runs nothing again. Then:

  judge.mode = "together"  each sub-run goes to `generate`; all are judged together
                           (evalpipe/judging/together.py) by `compare --mode together`
  judge.mode = "pairwise"  each sub-run goes to `generate`; all are judged two at a time
                           (evalpipe/judging/pairwise.py) by `compare --mode pairwise`
  judge.mode = "single"    each sub-run goes through `aggregate` (judged alone, the book's way);
                           then `compare` of the sub-runs

and the comparison is written to `results/compare-NAME/` (docs/compare.md). Other stage commands
(`prepare` ... `aggregate`, `clean`) act on every sub-run; `status` lists every sub-run and the
comparison. With `model.bases` and `finetune.seeds` empty nothing here is used: one run.

`finetune.seeds = [123, 124]` makes one sub-run per seed (for each base), `NAME--seed124` or
`NAME--<slug>--seed124`, with `finetune.seed` set and `finetune.seeds` emptied. Each sub-run is
labelled (model, seed) (`subrun_labels`, and results/compare-NAME/subruns.json) so that the
comparison can group the seeds of one model; for now it ranks every sub-run on its own.
`evaluate(jobs=N)` (`evalpipe evaluate --jobs N`) brings N sub-runs up to date at once, each in
a spawned process of its own (docs/compare.md).

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
from evalpipe.errors import EvalpipeError
from evalpipe.io import write_json
from evalpipe.paths import RunPaths
from evalpipe.stages.pipeline import Pipeline, Status

SEPARATOR = "--"  # results/<run>--<slug>/


@dataclass
class SubRun:
    """One base model's run with one fine-tuning seed."""

    base: str  # the spec as written in model.bases (or model.base)
    name: str  # the run's folder name: <run>[--<slug>][--seed<N>]
    config: RunConfig
    model: str = ""  # the model's label: the base's slug
    seed: int = 0  # its finetune.seed


def has_sub_runs(config: RunConfig) -> bool:
    """Whether the config makes several runs (model.bases, finetune.seeds) rather than one."""
    return bool(config.model.bases or config.finetune.seeds)


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
    """One run per base of model.bases and seed of finetune.seeds, bases outer, in the order
    listed (no bases: model.base; no seeds: finetune.seed)."""
    bases = config.model.bases
    twice = sorted({base for base in bases if bases.count(base) > 1})
    if twice:
        raise ConfigError(f"model.bases: {twice[0]!r} is listed twice")
    plain = [base_slug(base) for base in bases]
    slugs = [f"{slug}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
             if plain.count(slug) > 1 else slug for base, slug in zip(bases, plain)]
    seeds = config.finetune.seeds
    runs = []
    for base, slug in zip(bases or [config.model.base], slugs or [base_slug(config.model.base)]):
        for seed in seeds or [config.finetune.seed]:
            name = run + (f"{SEPARATOR}{slug}" if bases else "")
            name += f"{SEPARATOR}seed{seed}" if seeds else ""
            sub = copy.deepcopy(config)
            sub.model.base, sub.model.bases = base, []
            sub.finetune.seed, sub.finetune.seeds = seed, []
            runs.append(SubRun(base, name, sub, slug, seed))
    return runs


def subrun_labels(config: RunConfig, run: str) -> dict[str, tuple[str, int]]:
    """Each sub-run's name -> (model label, seed), e.g. {"duo--gpt2--seed124": ("gpt2", 124)}:
    what a comparison needs to group the seeds of one model."""
    return {sub.name: (sub.model, sub.seed) for sub in sub_runs(config, run)}


def subrun_records(subs: list[SubRun]) -> list[dict]:
    """results/compare-<run>/subruns.json: one {"run", "model", "seed", "base"} per sub-run."""
    return [{"run": sub.name, "model": sub.model, "seed": sub.seed, "base": sub.base}
            for sub in subs]


def announce(sub: SubRun, config: RunConfig) -> str:
    """The line that opens a sub-run's output."""
    seed = f", finetune.seed = {sub.seed}" if config.finetune.seeds else ""
    return f"== run {sub.name} (model.base = {sub.base}{seed})"


def sub_target(config: RunConfig) -> str:
    """How far each sub-run goes before the comparison."""
    return "generate" if config.judge.mode in ("together", "pairwise") else "aggregate"


def _paths(paths: RunPaths, name: str) -> RunPaths:
    return RunPaths(results=paths.results, run=name, datasets=paths.datasets)


def evaluate(config: RunConfig, paths: RunPaths, *, jobs: int = 1, echo=print) -> Path:
    """Bring every sub-run up to date (`jobs` at a time, each in its own process when more
    than 1), then compare them into results/compare-<run>/."""
    from evalpipe.compare import compare_runs, print_leaderboard

    subs = sub_runs(config, paths.run)
    target = sub_target(config)
    if jobs > 1 and len(subs) > 1:
        ensure_in_processes(subs, config, paths, target, jobs, echo)
    else:
        for sub in subs:
            echo(announce(sub, config))
            Pipeline(sub.config, _paths(paths, sub.name), echo=echo).ensure(target)
    models = len(config.model.bases) or 1
    what = f"{models} base models"
    if config.finetune.seeds:
        what = f"{len(subs)} sub-runs: {models} base model{'s' * (models > 1)} x " \
               f"{len(config.finetune.seeds)} seeds"
    echo(f"== compare-{paths.run} ({what}, judge.mode = {config.judge.mode})")
    out = paths.results / f"compare-{paths.run}"
    write_json(out / "subruns.json", subrun_records(subs))
    together = config.judge.mode in ("together", "pairwise")  # judged here, by this config
    # The bootstrap settings are this config's [aggregate] section: a sub-run's config.toml is
    # rewritten only when one of its stages runs, so it may hold an earlier file's settings.
    out = compare_runs([sub.name for sub in subs], paths.results, paths.run,
                       mode=config.judge.mode, config=config if together else None,
                       aggregate=config.aggregate)
    print_leaderboard(out)
    return out


# -- sub-runs in parallel (evaluate --jobs N) ------------------------------------------------------

_SLOT: int | None = None  # a worker process's own number, 0 .. jobs-1


def _take_slot(slots) -> None:
    global _SLOT
    _SLOT = slots.get()


def worker_settings(slot: int, jobs: int, gpus: int, cores: int,
                    config: RunConfig) -> tuple[str | None, int]:
    """Where worker `slot` of `jobs` runs: (CUDA_VISIBLE_DEVICES or None, torch threads or 0).
    With several GPUs each worker sees one of its own (when every device key lets it choose:
    "auto" or "cuda"), so "auto" picks it and the config, stage keys and config.toml stay
    as with --jobs 1; otherwise the cores are split between the workers (a finetune.num_threads
    set in the config still wins in the fine-tune)."""
    devices = {config.model.device, config.finetune.device, config.generate.device}
    if gpus > 1 and devices <= {"auto", "cuda"}:
        return str(slot % gpus), 0
    return None, max(1, cores // jobs)


def _ensure_sub(sub: SubRun, config: RunConfig, paths: RunPaths, target: str, jobs: int,
                gpus: int, cores: int) -> tuple[str, str | None]:
    """In a worker process: bring one sub-run up to date, its output collected so that the
    parent prints it in one piece. Returns (output, the EvalpipeError's message or None)."""
    import contextlib
    import io
    import os

    import torch

    visible, threads = worker_settings(_SLOT or 0, jobs, gpus, cores, config)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible  # before this process first asks CUDA
    if threads:
        torch.set_num_threads(threads)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        print(announce(sub, config))
        try:
            Pipeline(sub.config, _paths(paths, sub.name), echo=print).ensure(target)
        except EvalpipeError as err:  # its message is what the CLI prints; finished work stays
            return output.getvalue(), str(err)
    return output.getvalue(), None


def ensure_in_processes(subs: list[SubRun], config: RunConfig, paths: RunPaths, target: str,
                        jobs: int, echo=print) -> None:
    """Bring the sub-runs up to date in `jobs` processes ('spawn': no state is inherited). Each
    sub-run's output is printed in one piece, in the sub-runs' order, once it and those before
    it have finished. Every sub-run is tried; then the first failure is raised."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    import torch

    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    gpus = torch.cuda.device_count()
    cores = os.cpu_count() or 1
    failures = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(subs)), mp_context=context,
                             initializer=_take_slot, initargs=(slots,)) as pool:
        futures = [pool.submit(_ensure_sub, sub, config, paths, target, jobs, gpus, cores)
                   for sub in subs]
        for future in futures:
            output, failure = future.result()
            echo(output.rstrip("\n"))
            if failure is not None:
                failures.append(failure)
    if failures:
        raise EvalpipeError(failures[0])


def each(config: RunConfig, paths: RunPaths, action, *, echo=print) -> None:
    """`action(pipeline)` for every sub-run, announcing each."""
    for sub in sub_runs(config, paths.run):
        echo(announce(sub, config))
        action(Pipeline(sub.config, _paths(paths, sub.name), echo=echo))


def status_lines(config: RunConfig, paths: RunPaths) -> list[str]:
    """Every sub-run's stages, then the together judgment (if any) and the comparison."""
    subs = sub_runs(config, paths.run)
    target = sub_target(config)
    lines = []
    all_done = True
    for sub in subs:
        pipeline = Pipeline(sub.config, _paths(paths, sub.name))
        seed = f", finetune.seed = {sub.seed}" if config.finetune.seeds else ""
        lines.append(f"run {sub.name} (model.base = {sub.base}{seed}) in {pipeline.paths.root}")
        statuses = pipeline.status(target)
        all_done = all_done and all(s.state == "done" for s in statuses)
        lines += [status.line() for status in statuses]
    out = paths.results / f"compare-{paths.run}"
    lines.append(f"comparison compare-{paths.run} in {out}")
    if config.judge.mode in ("together", "pairwise"):
        lines.append(judgment_status(config, paths, subs, all_done).line())
    board = out / "leaderboard.json"
    if board.exists():
        lines.append(Status("compare", "done", "leaderboard.json written; "
                                               "'evalpipe evaluate' refreshes it").line())
    else:
        lines.append(Status("compare", "missing", "never run").line())
    return lines


def judgment_status(config: RunConfig, paths: RunPaths, subs: list[SubRun],
                    all_done: bool) -> Status:
    """The joint judgment of judge.mode = "together" or "pairwise" (`all_done`: every sub-run's
    responses are up to date): done, stale or missing."""
    if config.judge.mode == "together":
        from evalpipe.judging.together import FOLDER
        from evalpipe.judging.together import together_freshness as freshness
    else:
        from evalpipe.judging.pairwise import FOLDER
        from evalpipe.judging.pairwise import pairwise_freshness as freshness

    out = paths.results / f"compare-{paths.run}" / FOLDER
    if all_done:
        state, reason = freshness(out, config.judge, [sub.name for sub in subs], paths.results)
    else:
        state, reason = "missing", "the runs' responses are not all made yet"
        if out.exists():
            state = "stale"
    return Status(config.judge.mode, state, reason)
