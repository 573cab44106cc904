"""Stage 2, finetune: fine-tune a GPT-2-architecture base model on the training split.

The recipe is the book's (chapter 7): each example is template + response + <|endoftext|>;
a batch is padded to its longest example with token 50256; targets are the inputs shifted by
one, with every padding target but the first (the end-of-text the model must learn to emit)
set to -100; AdamW with the book's learning rate and weight decay; validation loss at a fixed
step interval and at the end of every epoch.

Training is repeatable and resumable. Every random generator it draws from (dropout's, on
whichever device) is seeded from `finetune.seed`, so two runs end with the same weights. Every
`checkpoint_interval` steps the weights, optimizer, the state of every random generator and
the position in the epoch are saved to checkpoint.pt, and a rerun with the same settings
continues from there and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.io import read_jsonl, sha256_json, write_json, write_jsonl
from evalpipe.paths import RunPaths

IGNORE_INDEX = -100
CHECKPOINT = "checkpoint.pt"


# -- the stage contract (evalpipe/stages/contract.py) -------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    return ("prepare",)


def config_key(config: RunConfig) -> dict:
    from evalpipe.gpt2.runtime import base_identity, finetune_dtype

    # Where the work runs does not change what it computes (up to float rounding). model.bases
    # and finetune.seeds only name sub-runs (evalpipe/sweep.py), each keyed on its own base/seed.
    model = {k: v for k, v in config.section("model").items()
             if k not in ("bases", "device", "revision")}
    finetune = {k: v for k, v in config.section("finetune").items()
                if k not in ("device", "num_threads", "checkpoint_interval", "seeds")}
    # The dtype computed in, not the setting: "auto" that resolves to float32 is the run that
    # "float32" makes, and the same "auto" on a machine where it resolves otherwise is not.
    finetune["dtype"] = finetune_dtype(config).dtype
    return {"model": model, "finetune": finetune, "data.template": config.data.template,
            **base_identity(config)}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    files = {f"prepare/{name}": paths / f"prepare/{name}"
             for name in ("train.jsonl", "val.jsonl", "test.jsonl")}
    from evalpipe.gpt2.weights import local_files

    for path in local_files(config.model.base):
        files[f"base/{path.name}"] = path
    return files


def outputs(config: RunConfig) -> tuple[str, ...]:
    return ("model.safetensors", "model.json", "metrics.jsonl", "loss.png", "summary.json")


def run(config: RunConfig, paths: RunPaths) -> None:
    train_model(config, paths)


# -- data ---------------------------------------------------------------------------------------

@dataclass
class Example:
    tokens: list[int]  # template + response, without the end-of-text token
    prompt_length: int  # tokens of the instruction and input, masked with mask_instruction


def encode_examples(records: list[dict], template_name: str) -> list[Example]:
    from evalpipe.templates import encode, get_template

    template = get_template(template_name)
    return [Example(encode(template.training_text(r)), len(encode(template.prompt(r))))
            for r in records]


def collate(examples: list[Example], *, pad_id: int = 50256, max_length: int | None = None,
            mask_instruction: bool = False):
    """The book's custom_collate_fn: append end-of-text, pad to the longest, shift by one,
    ignore every padding target but the first, optionally truncate and mask the prompt."""
    import torch

    longest = max(len(example.tokens) + 1 for example in examples)
    inputs, targets = [], []
    for example in examples:
        padded = example.tokens + [pad_id] * (longest - len(example.tokens))
        x = torch.tensor(padded[:-1])
        y = torch.tensor(padded[1:])
        padding = torch.nonzero(y == pad_id).squeeze(1)
        if padding.numel() > 1:
            y[padding[1:]] = IGNORE_INDEX
        if mask_instruction:
            y[: example.prompt_length - 1] = IGNORE_INDEX
        if max_length:
            x, y = x[:max_length], y[:max_length]
        inputs.append(x)
        targets.append(y)
    return torch.stack(inputs), torch.stack(targets)


def batch_loss(model, inputs, targets, device, autocast_dtype=None):
    """Mean cross-entropy over the targets that count (not -100): the book's loss.

    The model computes logits only where the target counts, and each example only up to its
    last counted target (`GPTModel.forward(logits_for=...)`): the padding after each
    example's end-of-text costs nothing, nor, with mask_instruction, does the output head on
    the prompt. The loss and its gradients are those of the book's full-logits computation.
    """
    import torch

    inputs, targets = inputs.to(device), targets.to(device)
    counted = targets != IGNORE_INDEX
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(inputs, logits_for=counted)  # (counted targets, vocab_size)
    return torch.nn.functional.cross_entropy(logits.float(), targets[counted])


def dataset_loss(model, examples: list[Example], settings, device, max_length,
                 autocast_dtype=None) -> float:
    """Loss over a whole split, weighted by target tokens (the book averages per batch; a
    token-weighted mean does not depend on how the split happens to fall into batches)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), settings.batch_size):
            inputs, targets = collate(examples[start:start + settings.batch_size],
                                      max_length=max_length,
                                      mask_instruction=settings.mask_instruction)
            tokens = int((targets != IGNORE_INDEX).sum())
            loss = batch_loss(model, inputs, targets, device, autocast_dtype)
            total += float(loss) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch, a function of (seed, epoch) alone, so a resumed run
    sees exactly the batches an uninterrupted run would."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n_examples, generator=generator).tolist()


# -- training -----------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed every generator training draws from: Python's, and torch's on the CPU and on
    every CUDA and MPS device (torch.manual_seed seeds them all)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def rng_states() -> dict:
    """The state of every generator seed_everything seeds, for a checkpoint."""
    import torch

    states = {"python": random.getstate(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if _mps_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what rng_states saved. Generator states are CPU byte tensors whatever the
    device they drive (torch refuses them anywhere else), hence the .cpu()."""
    import torch

    random.setstate(states["python"])
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])
    if "mps" in states and _mps_available():
        torch.mps.set_rng_state(states["mps"].cpu())


def make_optimizer(model, settings, device):
    """The book's AdamW (its learning rate and weight decay), fused where PyTorch has a fused
    kernel: one pass over each parameter instead of a chain of elementwise operations, each
    a pass over 124M or more numbers (on CPU this takes a GPT-2 124M step's update from about
    0.5 s to 0.1 s). The update is the same up to float rounding."""
    import torch

    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(model.parameters(), lr=settings.lr,
                             weight_decay=settings.weight_decay, fused=fused)


def train_model(config: RunConfig, paths: RunPaths,
                on_step: Callable[[int], None] | None = None) -> dict:
    """Fine-tune and write the stage's outputs; `on_step(step)` is called after every
    optimizer step (tests use it to interrupt a run)."""
    import torch
    from tqdm import tqdm

    from evalpipe.gpt2.runtime import finetune_dtype, load_base, resolve_device
    from evalpipe.gpt2.weights import save_finetuned

    settings = config.finetune
    out = paths.stage_dir("finetune")
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    dtype = finetune_dtype(config)
    autocast_dtype = torch.bfloat16 if dtype.dtype == "bfloat16" else None
    print(f"finetune: computing in {dtype.dtype} ({dtype.reason}) on {device}")

    loaded = load_base(config)
    model = loaded.model.to(device)
    seed_everything(settings.seed)  # dropout's masks; a resumed run restores them below
    max_length = settings.max_length or loaded.config.context_length
    max_length = min(max_length, loaded.config.context_length)
    splits = {name: encode_examples(read_jsonl(paths / f"prepare/{name}.jsonl"),
                                    config.data.template) for name in ("train", "val", "test")}
    optimizer = make_optimizer(model, settings, device)
    steps_per_epoch = len(splits["train"]) // settings.batch_size  # last partial batch dropped
    if steps_per_epoch == 0:
        from evalpipe.errors import EvalpipeError
        raise EvalpipeError(f"finetune: {len(splits['train'])} training examples make no full "
                            f"batch of {settings.batch_size}")
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)

    def loss_of(split: str) -> float:
        return dataset_loss(model, splits[split], settings, device, max_length, autocast_dtype)

    # A checkpoint counts only for the same settings, base weights and data (every split: the
    # checkpoint also holds the base model's validation and test losses).
    run_key = sha256_json({"config": config_key(config), "base": loaded.sha256,
                           "data": {name: [(e.tokens, e.prompt_length) for e in examples]
                                    for name, examples in splits.items()}})
    state = {"step": 0, "tokens_seen": 0, "metrics": [], "best_val": math.inf,
             "best_weights": None, "evals_without_gain": 0, "stopped_early": False,
             "train_seconds": 0.0, "train_losses": [], "run_key": run_key}
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists():
        # Loaded on the CPU: load_state_dict copies weights and optimizer state to the
        # model's device, and generator states must stay CPU tensors.
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if saved.get("state", {}).get("run_key") == run_key and "rng_states" in saved:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            set_rng_states(saved["rng_states"])
            state = saved["state"]
            print(f"finetune: resuming at step {state['step']} of {total_steps}")
    if "base_test_loss" not in state:
        state["base_test_loss"] = loss_of("test")
        state["base_val_loss"] = loss_of("val")

    def save_checkpoint() -> None:
        from evalpipe.io import atomic_open

        with atomic_open(checkpoint_path, "wb") as handle:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng_states": rng_states(), "state": state}, handle)

    def evaluate(epoch: float) -> None:
        val_loss = loss_of("val")
        train_losses = state["train_losses"]
        state["metrics"].append({
            "step": state["step"], "epoch": round(epoch, 4), "tokens_seen": state["tokens_seen"],
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else None,
            "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(state["train_seconds"], 3)})
        train_losses.clear()
        if val_loss < state["best_val"]:
            state["best_val"] = val_loss
            state["evals_without_gain"] = 0
            if settings.early_stopping:
                # A copy, not a reference: the live parameters keep changing.
                state["best_weights"] = copy.deepcopy(model.state_dict())
        else:
            state["evals_without_gain"] += 1
            if settings.early_stopping and state["evals_without_gain"] >= settings.early_stopping:
                state["stopped_early"] = True

    model.train()
    progress = tqdm(total=total_steps, initial=state["step"], desc="finetune", unit="step")
    while state["step"] < total_steps and not state["stopped_early"]:
        epoch, position = divmod(state["step"], steps_per_epoch)
        order = epoch_order(len(splits["train"]), settings.seed, epoch)
        start = position * settings.batch_size
        batch = [splits["train"][i] for i in order[start:start + settings.batch_size]]
        inputs, targets = collate(batch, max_length=max_length,
                                  mask_instruction=settings.mask_instruction)
        clock = time.monotonic()
        optimizer.zero_grad()
        loss = batch_loss(model, inputs, targets, device, autocast_dtype)
        loss.backward()
        optimizer.step()
        seconds = time.monotonic() - clock
        state["step"] += 1
        state["tokens_seen"] += inputs.numel()
        state["train_seconds"] += seconds
        state["train_losses"].append(loss.item())
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}", tok_per_s=f"{inputs.numel() / seconds:.0f}")
        end_of_epoch = state["step"] % steps_per_epoch == 0
        if (settings.eval_interval and state["step"] % settings.eval_interval == 0) or \
                end_of_epoch or state["step"] == total_steps:
            evaluate(state["step"] / steps_per_epoch)
        if end_of_epoch or (settings.checkpoint_interval
                            and state["step"] % settings.checkpoint_interval == 0):
            save_checkpoint()
        if on_step is not None:
            on_step(state["step"])
    progress.close()

    if settings.early_stopping and state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    summary = {
        "base_model": loaded.source, "base_sha256": loaded.sha256,
        "base_revision": loaded.revision,
        "base_test_loss": state["base_test_loss"], "base_val_loss": state["base_val_loss"],
        "finetuned_test_loss": loss_of("test"),
        "final_val_loss": loss_of("val"),
        "best_val_loss": state["best_val"] if state["metrics"] else None,
        "steps": state["step"], "tokens_seen": state["tokens_seen"],
        "epochs": round(state["step"] / steps_per_epoch, 4),
        "stopped_early": state["stopped_early"], "train_seconds": round(state["train_seconds"], 3),
        "parameters": model.num_parameters(),
        "dtype": dtype.dtype, "dtype_reason": dtype.reason,
    }
    save_finetuned(model.cpu(), loaded.config, out, {
        "tokenizer": "gpt2", "template": config.data.template,
        "base_model": config.model.base, "base_source": loaded.source,
        "base_sha256": loaded.sha256, "base_revision": loaded.revision,
        # the weights are float32 whatever the dtype: bf16 autocast computes, it stores nothing
        "trained_in": dtype.dtype, "trained_in_reason": dtype.reason})
    write_jsonl(out / "metrics.jsonl", state["metrics"])
    from evalpipe.report.plots import plot_losses

    plot_losses(state["metrics"], out / "loss.png")
    write_json(out / "summary.json", summary)
    checkpoint_path.unlink(missing_ok=True)
    print(f"finetune: test loss {summary['base_test_loss']:.3f} -> "
          f"{summary['finetuned_test_loss']:.3f} in {summary['steps']} steps")
    return summary


