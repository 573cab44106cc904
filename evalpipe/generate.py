"""Stage 3, generate: a response from the fine-tuned model for every test record,
or responses made elsewhere imported with `generate --from FILE`."""

from __future__ import annotations

from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.pipeline import NotBuiltYet, RunPaths


def needs(config: RunConfig) -> tuple[str, ...]:
    # Importing responses, or generating straight from a base model, needs no fine-tune.
    if config.generate.from_file or config.generate.model != "finetuned":
        return ("prepare",)
    return ("prepare", "finetune")


def config_key(config: RunConfig) -> dict:
    generate = config.section("generate")
    if config.generate.from_file:
        return {key: generate[key] for key in ("from_file", "response_key", "allow_partial")}
    generate = {k: v for k, v in generate.items()
                if k not in ("from_file", "response_key", "allow_partial", "device")}
    return {"generate": generate, "data.template": config.data.template}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    files = {"prepare/test.jsonl": paths / "prepare/test.jsonl"}
    if config.generate.from_file:
        files["from"] = Path(config.generate.from_file).expanduser()
    elif config.generate.model == "finetuned":
        for name in ("model.safetensors", "model.json"):
            files[f"finetune/{name}"] = paths / f"finetune/{name}"
    return files


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("responses.jsonl",)


def run(config: RunConfig, paths: RunPaths) -> None:
    raise NotBuiltYet("generate: not built yet (see the generate issue)")
