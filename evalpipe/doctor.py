"""What a run needs before it starts, and whether it is there: `evalpipe doctor`, and the judge
check that judge, aggregate and evaluate make before any long work.

Every check is a pure function of the configuration (and the machine) returning `Check`s:
what is needed, whether it is there, the detail a person reads, and the command that fixes it.
`doctor_checks` gathers them for the configured run; `doctor_lines` renders them, one line each.
Nothing here downloads: the tokenizer, the data and the base-model weights are looked for where
the run would find them (tiktoken's cache, datasets/raw/, the Hugging Face cache).

The judge check asks the judge the way the judge stage will (the backend's preflight: server
reachable, model present, the same digest on every host), with the short timeout of the stage
cache's digest question, so a run that would end at the judge stops in seconds instead, before
fine-tuning or generating. It is made only when the judge stage will actually run
(`judge_is_due`): a finished run keeps working with the server down.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.paths import RunPaths

MIN_PYTHON = (3, 11)

# tiktoken caches each file of the GPT-2 encoding under the SHA-1 of its URL (tiktoken/load.py).
TIKTOKEN_FILES = {
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}
TIKTOKEN_RECIPE = ("python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\" online; offline, "
                   "copy vocab.bpe and encoder.json into TIKTOKEN_CACHE_DIR under their SHA-1 "
                   "names (README, 'Running offline')")

# Fine-tuning writes the model and resumable checkpoints (weights and AdamW's two moments, fp32):
# about 16 bytes per parameter, kept as the disk space a run needs.
BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class Check:
    """One thing the run needs: whether it is there, what was found, and what fixes it."""

    what: str
    ok: bool
    detail: str
    fix: str = ""  # the command (or setting) that fixes it; empty when ok


# -- the judge ---------------------------------------------------------------------------------

FIX_IN_MESSAGE = re.compile(r"[:;,]? *(?:start it with|run) '([^']+)'$")


def judge_ready(settings, *, pull: bool = False) -> str:
    """Preflight the judge of `settings` (an evalpipe.config.JudgeConfig) with a short timeout
    and return the line saying it is ready; raises JudgeError (one line naming what to run).
    With `pull` (the check before a run, not doctor, which only looks), a model the server
    lacks is pulled first where judge.pull allows it, as the judge stage would."""
    from evalpipe.judging.backends import ModelMissingError, make_backend
    from evalpipe.judging.engine import IDENTITY_TIMEOUT, preflight, served_digest

    quick = dataclasses.replace(settings, timeout=min(settings.timeout, IDENTITY_TIMEOUT))
    backend = make_backend(quick)  # llamacpp: checks that the GGUF file and xllamacpp are there
    if settings.backend == "llamacpp":
        # Loading the GGUF takes as long as the stage's own load, which follows anyway: the
        # check reads the file's digest, as the stage cache does (engine.served_digest).
        backend.close()
        digest = served_digest(settings)[:12]
        return f"judge: {backend.path.name} (digest {digest}) at {backend.path} is ready"
    try:
        try:
            identity = backend.preflight()
        except ModelMissingError:
            if not (pull and settings.pull):
                raise
            # A pull streams for minutes: with the run's own timeout per read.
            backend.close()
            backend = make_backend(settings)
            identity = preflight(backend, settings)
    finally:
        backend.close()
    digest = identity.digest.removeprefix("sha256:")[:12]
    return f"judge: {identity.model} (digest {digest}) at {_judge_where(backend, settings)} is ready"


def _judge_where(backend, settings) -> str:
    """The server URL(s) or the GGUF file a backend asks."""
    members = getattr(backend, "backends", None)
    if members:
        return ", ".join(_judge_where(member, settings) for member in members)
    for attribute in ("url", "path"):
        if getattr(backend, attribute, None):
            return str(getattr(backend, attribute))
    return f"judge.backend = {settings.backend!r}"


def judge_check(settings) -> Check:
    from evalpipe.judging.backends import JudgeError, UnreachableJudgeError

    try:
        return Check("judge", True, judge_ready(settings).removeprefix("judge: "))
    except JudgeError as err:
        message = str(err)
        found = FIX_IN_MESSAGE.search(message)
        if found:
            return Check("judge", False, message[:found.start()], found.group(1))
        if isinstance(err, UnreachableJudgeError):
            fix = "start the judge server, or set judge.host / judge.hosts"
        else:
            fix = "check judge.backend, judge.model and judge.host (docs/judge.md)"
        return Check("judge", False, message, fix)


def judge_is_due(config: RunConfig, paths: RunPaths, command: str, *, force: bool = False) -> bool:
    """Whether `command` (judge, aggregate or evaluate) will reach the judge stage, per the
    stage cache: the judge (or, with model.bases and judge.mode = "together", the together
    judgment) is not up to date, or `judge --force` reruns it."""
    from evalpipe import sweep
    from evalpipe.stages.pipeline import Pipeline

    if force and command == "judge":
        return True
    if not sweep.has_sub_runs(config):
        if config.judge.mode in ("together", "pairwise"):
            return False  # the judge stage refuses them: they are for several runs
        return _judge_due_in(Pipeline(config, paths, echo=lambda line: None))
    subs = sweep.sub_runs(config, paths.run)
    pipelines = [Pipeline(sub.config, dataclasses.replace(paths, run=sub.name),
                          echo=lambda line: None) for sub in subs]
    if config.judge.mode in ("together", "pairwise"):
        all_done = all(status.state == "done" for pipeline in pipelines
                       for status in pipeline.status("generate"))
        return sweep.judgment_status(config, paths, subs, all_done).state != "done"
    return any(_judge_due_in(pipeline) for pipeline in pipelines)


def _judge_due_in(pipeline) -> bool:
    from evalpipe.stages.pipeline import get_stage

    # The judge's own manifest first: a fresh run is due without looking at the stages before.
    if pipeline.own_status(get_stage("judge")).state != "done":
        return True
    return any(status.state != "done" for status in pipeline.status("judge"))


# -- the machine -------------------------------------------------------------------------------

def python_check(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    text = ".".join(map(str, version))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", True, text)
    return Check("python", False, f"{text}, evalpipe needs 3.11 or newer",
                 "install Python 3.11+, then 'make setup'")


def torch_check() -> Check:
    try:
        import torch
    except ImportError:
        return Check("torch", False, "not installed", "make setup")
    return Check("torch", True, torch.__version__)


def device_check(config: RunConfig, cpuinfo: str | None = None) -> Check:
    """The device fine-tuning runs on (finetune.device), and the dtype it computes in there
    (finetune.dtype resolved, with why)."""
    try:
        import torch  # only to find out whether it is installed

        from evalpipe.gpt2.runtime import choose_dtype, cpu_flags, resolve_device
    except ImportError:
        return Check("device", False, "torch is not installed", "make setup")
    setting = config.finetune.device
    try:
        device = resolve_device(setting)
    except EvalpipeError as err:
        return Check("device", False, str(err), "--set finetune.device=auto")
    facts: dict = {}
    if device.type == "cuda":
        import torch

        facts["cuda_capability"] = tuple(torch.cuda.get_device_capability(device))
        detail = f"CUDA {torch.cuda.get_device_name(device)}"
    elif device.type == "mps":
        detail = "MPS (Apple GPU)"
    else:
        if cpuinfo is None:
            cpuinfo = _read_cpuinfo()
        facts["cpu_flags"] = cpu_flags(cpuinfo)
        detail = f"CPU ({platform.machine() or 'unknown'}, {os.cpu_count()} cores)"
    choice = choose_dtype(config.finetune.dtype, device.type, **facts)
    detail += f", fine-tunes in {choice.dtype} ({choice.reason})"
    auto = choose_dtype("auto", device.type, **facts)
    if auto.dtype != choice.dtype:
        detail += f"; 'auto' would take {auto.dtype} ({auto.reason.removeprefix('auto: ')})"
    return Check("device", True, f"{detail} (finetune.device = {setting!r})")


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def tiktoken_cache_dir(environ=os.environ) -> Path:
    """The folder tiktoken reads its cache from (tiktoken/load.py's rule)."""
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in environ:
            return Path(environ[name])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def tokenizer_check(environ=os.environ) -> Check:
    folder = tiktoken_cache_dir(environ)
    missing = [name for name, cached in TIKTOKEN_FILES.items() if not (folder / cached).is_file()]
    if not missing:
        return Check("tokenizer", True, f"GPT-2's vocab.bpe and encoder.json in {folder}")
    return Check("tokenizer", False, f"no {' or '.join(missing)} of GPT-2 in {folder}",
                 TIKTOKEN_RECIPE)


# -- the run's inputs --------------------------------------------------------------------------

def data_check(config: RunConfig, paths: RunPaths) -> Check:
    from evalpipe.stages.prepare import is_url, source_path

    source = config.data.source
    path = source_path(config, paths)
    if is_url(source):
        if path.is_file():
            return Check("data", True, f"{source} downloaded to {path}")
        return Check("data", False, f"{source} not downloaded yet (to {path})",
                     "evalpipe prepare (online), or --set data.source=PATH of a local copy")
    if path.is_file():
        return Check("data", True, str(path))
    return Check("data", False, f"data.source: {path} not found",
                 "--set data.source=PATH of instruction-data.json")


def imported_check(config: RunConfig) -> Check:
    path = Path(config.generate.from_file).expanduser()
    if path.is_file():
        return Check("responses", True, f"imported from {path}: no model needed")
    return Check("responses", False, f"generate.from_file: {path} not found",
                 "--set generate.from_file=PATH, or 'evalpipe clean generate'")


def base_check(spec: str, revision: str = "", cache_dir: str | Path | None = None) -> Check:
    """The base model's weights: in the Hugging Face cache (presets and hf:OWNER/REPO, looked
    up without downloading), a local path that exists, or nothing for random weights."""
    from evalpipe.gpt2.weights import HF_CONFIG_FILE, WEIGHTS_FILE, hub_repo

    what = f"base {spec}"
    if spec == "random":
        return Check(what, True, "random weights: nothing to download")
    try:
        repo_id = hub_repo(spec)
    except EvalpipeError as err:
        return Check(what, False, str(err), "model.base = hf:OWNER/REPO")
    if repo_id is None:
        path = Path(spec).expanduser()
        if path.exists():
            return Check(what, True, f"{path}")
        return Check(what, False, f"{path} not found", "--set model.base=PATH of the weights")
    from huggingface_hub import try_to_load_from_cache

    missing = [name for name in (HF_CONFIG_FILE, WEIGHTS_FILE)
               if not isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir,
                                                        revision=revision or None), str)]
    if not missing:
        return Check(what, True, f"{repo_id} in the Hugging Face cache")
    at = f" --revision {revision}" if revision else ""
    return Check(what, False, f"{repo_id}: {' and '.join(missing)} not in the Hugging Face cache",
                 f"huggingface-cli download {repo_id} {' '.join(missing)}{at}")


def disk_check(results: Path, needed: int, free: int | None = None) -> Check:
    """Free space where results/ is (or will be) against the bytes a run needs."""
    if free is None:
        folder = results.resolve()
        while not folder.exists():
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    detail = f"{_gigabytes(free)} free for {results}, about {_gigabytes(needed)} needed"
    if free >= needed:
        return Check("disk", True, detail)
    return Check("disk", False, detail, f"free space on the disk of {results}, or --results DIR")


def _gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def bytes_needed(config: RunConfig, spec: str) -> int:
    """About what fine-tuning `spec` writes (BYTES_PER_PARAMETER per parameter): from the
    shape for presets and random weights, from the weights file otherwise (4 bytes a
    parameter); 0 when unknown."""
    try:
        from evalpipe.gpt2.model import PRESETS
    except ImportError:
        return 0
    if spec in PRESETS or spec == "random":
        shape = dataclasses.replace(PRESETS.get(spec, PRESETS["gpt2"]),
                                    **config.model.shape_overrides())
        width, layers = shape.emb_dim, shape.n_layers
        parameters = 12 * layers * width * width + (shape.vocab_size + shape.context_length) * width
        return parameters * BYTES_PER_PARAMETER
    path = Path(spec).expanduser()
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files if p.exists())
    return size // 4 * BYTES_PER_PARAMETER


# -- all of them -------------------------------------------------------------------------------

def doctor_checks(config: RunConfig, paths: RunPaths) -> list[Check]:
    """Everything the configured run needs, in the order the run needs it."""
    checks = [python_check(), torch_check(), device_check(config), tokenizer_check(),
              data_check(config, paths)]
    bases = config.model.bases or [config.model.base]
    if config.generate.from_file:
        checks.append(imported_check(config))
    else:
        checks += [base_check(base, config.model.revision) for base in bases]
    checks.append(judge_check(config.judge))
    needed = 0 if config.generate.from_file else sum(bytes_needed(config, b) for b in bases)
    checks.append(disk_check(paths.results, needed))
    return checks


def doctor_lines(checks: list[Check]) -> list[str]:
    """One line per check, the fix after a missing one, and the verdict."""
    width = max(len(check.what) for check in checks)
    lines = []
    for check in checks:
        line = f"{'ok' if check.ok else 'MISSING':<8} {check.what:<{width}}  {check.detail}"
        if not check.ok and check.fix:
            line += f" -- fix: {check.fix}"
        lines.append(line)
    missing = [check.what for check in checks if not check.ok]
    lines.append(f"not ready: {', '.join(missing)} missing" if missing
                 else "ready: everything the run needs is here")
    return lines
