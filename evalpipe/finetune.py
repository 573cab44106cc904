"""Stage 2, finetune: fine-tune a GPT-2-architecture base model on the training split."""

from __future__ import annotations

from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.pipeline import NotBuiltYet, RunPaths


def needs(config: RunConfig) -> tuple[str, ...]:
    return ("prepare",)


def config_key(config: RunConfig) -> dict:
    # Where the work runs does not change what it computes (up to float rounding).
    model = {k: v for k, v in config.section("model").items() if k not in ("bases", "device")}
    finetune = {k: v for k, v in config.section("finetune").items()
                if k not in ("device", "num_threads")}
    return {"model": model, "finetune": finetune, "data.template": config.data.template}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    files = {f"prepare/{name}": paths / f"prepare/{name}"
             for name in ("train.jsonl", "val.jsonl", "test.jsonl")}
    base = Path(config.model.base).expanduser()
    if base.is_file():
        files["base"] = base
    elif base.is_dir():
        for weights in sorted(base.glob("*.safetensors")):
            files[f"base/{weights.name}"] = weights
    return files


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("model.safetensors", "model.json", "metrics.jsonl", "loss.png", "summary.json")


def run(config: RunConfig, paths: RunPaths) -> None:
    raise NotBuiltYet("finetune: not built yet (see the finetune issue)")
