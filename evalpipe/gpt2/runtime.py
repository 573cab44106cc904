"""Where models run and which model a stage gets: device choice, the fine-tune's dtype, and
base-model resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.paths import RunPaths

RANDOM_BASE = "random"  # model.base = "random": random weights in the configured shape


def resolve_device(name: str):
    """"auto" picks cuda, then mps, then cpu; a named device must exist."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.partition(":")[0] == "cuda":  # "cuda" or "cuda:N", the N-th GPU from 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise EvalpipeError(f"device {name!r} asked for, but torch sees "
                                f"{count or 'no'} CUDA device{'' if count == 1 else 's'}")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise EvalpipeError("device 'mps' asked for, but torch sees no MPS device")
    return torch.device(name)


def free_memory(device) -> int:
    """Bytes free for new tensors on `device`: the GPU's free memory, else the system's
    available memory (MemAvailable in /proc/meminfo on Linux; elsewhere the free pages, or
    half the memory where the system does not count free pages, as macOS)."""
    import os

    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if "SC_AVPHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def generation_batch_size(setting: int | str, device, model_config, max_length: int,
                          dtype) -> int:
    """generate.batch_size as a number: a number stays, "auto" becomes the size that suits
    the device and its free memory for a KV cache of `max_length` positions
    (evalpipe.gpt2.generation.auto_batch_size)."""
    from evalpipe.gpt2.generation import auto_batch_size

    if setting != "auto":
        return int(setting)
    return auto_batch_size(device.type, model_config, max_length, dtype, free_memory(device))


# CPU flags (Linux's /proc/cpuinfo names) of the units that run bf16 matrix products fast:
# AVX-512 BF16 (Intel Cooper Lake and later, AMD Zen 4 and later) and AMX (Intel Sapphire Rapids).
FAST_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CUDA_NATIVE_BF16 = (8, 0)  # compute capability from which NVIDIA GPUs compute in bf16 (Ampere)


@dataclasses.dataclass(frozen=True)
class DtypeChoice:
    """The dtype fine-tuning computes in and why: the resolved value of finetune.dtype."""

    dtype: str  # "float32" or "bfloat16"
    reason: str


def choose_dtype(setting: str, device_type: str, *, cuda_capability: tuple[int, int] | None = None,
                 cpu_flags: frozenset[str] = frozenset()) -> DtypeChoice:
    """finetune.dtype resolved from the facts given: "float32" and "bfloat16" stand; "auto" is
    bfloat16 (autocast) where the device has units that make it fast, float32 elsewhere,
    because emulated bf16 is slower than fp32 and rounds more.

    MPS stays in float32: Apple GPUs before the M2 have no bf16 units, and how fast autocast's
    bf16 runs on the later ones is not measured here; finetune.dtype = "bfloat16" asks for it."""
    if setting != "auto":
        return DtypeChoice(setting, f"finetune.dtype = {setting!r}")
    if device_type == "cuda":
        shown = ".".join(map(str, cuda_capability)) if cuda_capability else "unknown"
        if cuda_capability and tuple(cuda_capability) >= CUDA_NATIVE_BF16:
            return DtypeChoice("bfloat16", f"auto: the CUDA device (compute capability {shown}) "
                                           f"computes in bf16")
        return DtypeChoice("float32", f"auto: the CUDA device (compute capability {shown}, "
                                      f"before 8.0) has no bf16 units")
    if device_type == "mps":
        return DtypeChoice("float32", "auto: bf16 on MPS is not known to be faster")
    if device_type == "cpu":
        fast = sorted(cpu_flags & FAST_BF16_CPU_FLAGS)
        if fast:
            return DtypeChoice("bfloat16", f"auto: the CPU has {' and '.join(fast)}")
        return DtypeChoice("float32", "auto: the CPU has no AVX-512 BF16 or AMX")
    return DtypeChoice("float32", f"auto: no known fast bf16 on {device_type!r}")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of /proc/cpuinfo's text (its "flags" lines)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return frozenset(flags)


def this_cpu_flags() -> frozenset[str]:
    """This machine's CPU flags: /proc/cpuinfo's, or where there is none (macOS, Windows) the
    two that matter as PyTorch's own CPU check finds them."""
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        pass
    import torch

    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return frozenset(flag for flag, check in checks.items()
                     if getattr(torch.cpu, check, lambda: False)())


def finetune_dtype(config: RunConfig) -> DtypeChoice:
    """finetune.dtype resolved on this machine, for finetune.device. Only "auto" looks at the
    machine, and only "auto" on a device other than "cpu" imports torch (to find the device)."""
    settings = config.finetune
    if settings.dtype != "auto":
        return choose_dtype(settings.dtype, "")
    torch_device = None if settings.device == "cpu" else resolve_device(settings.device)
    device_type = "cpu" if torch_device is None else torch_device.type
    capability = None
    if device_type == "cuda":
        import torch

        capability = tuple(torch.cuda.get_device_capability(torch_device))
    flags = this_cpu_flags() if device_type == "cpu" else frozenset()
    return choose_dtype("auto", device_type, cuda_capability=capability, cpu_flags=flags)


def load_base(config: RunConfig, spec: str | None = None):
    """The base model named by `spec` (default model.base), shaped by the model section.

    "random" builds GPT-2 124M's shape with the configured overrides and random weights,
    seeded by finetune.seed: a model for tests and smoke runs that needs no download.
    """
    import torch

    from evalpipe.gpt2.model import PRESETS, GPTModel
    from evalpipe.gpt2.weights import LoadedModel, load_base_model

    spec = spec or config.model.base
    overrides = config.model.shape_overrides()
    if spec == RANDOM_BASE:
        shape = dataclasses.replace(PRESETS["gpt2"], **overrides, drop_rate=config.model.drop_rate)
        if shape.emb_dim % shape.n_heads:  # model.emb_dim unset: GPT-2 124M's 768
            raise EvalpipeError(f"model.n_heads: {shape.n_heads} does not divide the width "
                                f"{shape.emb_dim} of model.base = 'random' (model.emb_dim)")
        torch.manual_seed(config.finetune.seed)
        model = GPTModel(shape)
        return LoadedModel(model=model, config=shape, source=f"random weights, seed "
                           f"{config.finetune.seed}", sha256=f"random-{config.finetune.seed}")
    loaded = load_base_model(spec, overrides, revision=config.model.revision)
    set_dropout(loaded.model, config.model.drop_rate)
    # The shape saved with the fine-tuned model records the rate it was trained with.
    loaded.config = dataclasses.replace(loaded.config, drop_rate=config.model.drop_rate)
    loaded.model.cfg = loaded.config
    return loaded


def base_identity(config: RunConfig, spec: str | None = None) -> dict:
    """What a stage's config_key adds for the base model `spec` (default model.base) loads:
    for a Hub model, the commit it resolves to (model.revision, else main), so that a new
    commit on the Hub makes the stage stale; nothing for local files (the stage hashes them
    as inputs) or "random". model.revision itself is left out of the key: the commit is what
    decides the weights."""
    from evalpipe.gpt2.weights import hub_commit

    spec = spec or config.model.base

    commit = hub_commit(spec, config.model.revision)
    return {} if commit is None else {"model.base_commit": commit}


def set_dropout(model, rate: float) -> None:
    """Dropout is an explicit setting, whatever the checkpoint's config said."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate


def load_model_for_generation(config: RunConfig, paths: RunPaths):
    """The fine-tuned model of this run, or a base model straight away (generate.model)."""
    from evalpipe.gpt2.weights import load_finetuned

    if config.generate.model == "finetuned":
        return load_finetuned(paths.stage_dir("finetune"))
    spec = config.model.base if config.generate.model == "base" else config.generate.model
    return load_base(config, spec)
