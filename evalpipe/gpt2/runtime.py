"""Where models run and which model a stage gets: device choice and base-model resolution."""

from __future__ import annotations

import dataclasses

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
