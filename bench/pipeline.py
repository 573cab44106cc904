"""Benchmark: the book's chapter 7 run end to end (prepare, fine-tune, generate), evalpipe's
stage code at its defaults against the book's code on the same work.

    python bench/pipeline.py                 # GPT-2 medium: 3 steps, 16 + 2 prompts generated
    python bench/pipeline.py --dtype float32 # evalpipe in fp32 (the default is "auto")
    python bench/pipeline.py --prompts 110   # evalpipe's generate stage on all 110 prompts
    python bench/pipeline.py --preset gpt2 --steps 2 --naive-prompts 1 --prompts 8   # quick

The run's shape is the book's: GPT-2 medium (random weights, GPT-2's initialisation seeded by
finetune.seed, so nothing is downloaded; the output head untied, as configs/book.toml and the
book), the 1,100 instruction examples, two epochs of batch 8, greedy responses of at most 256
new tokens to the 110 test prompts. evalpipe's side takes every setting from RunConfig()'s
defaults but the model's shape, so that a faster default is measured without editing this
script; --dtype sets finetune.dtype.

Each side runs in a process of its own, one after the other, so that its peak memory
(ru_maxrss) is its own and the machine holds one GPT-2 medium with its optimizer state at a
time (about 7 GB); a machine shared with others then changes the ratio with its load, which
the script prints before and after each side.

- prepare: evalpipe's prepare stage (read, validate, ids, split, written to disk) and the
  tokenising of the splits (encode_examples), against the book's load, split and
  InstructionDataset (format_input, tiktoken). Median of 3.
- finetune: --steps optimizer steps on the same batches (evalpipe's seeded epoch order, each
  side collating with its own code), scaled to the two epochs' step count: the first step as
  timed, the others at the median step time. The evaluations a real run does are timed once
  and counted as often as the run does them: the book's evaluate_model (5 training and 5
  validation batches) every 5 steps, its sample of 50 tokens after each epoch (the book's
  generate_text_simple), its loss before training and torch.save at the end; evalpipe's
  validation loss every finetune.eval_interval steps and at each epoch's end, its base and
  final losses, its checkpoints (finetune.checkpoint_interval) and save_finetuned.
- generate: evalpipe's generate stage (which loads the saved model) on --prompts of the test
  prompts (default 16, spread over the prompt lengths; 110 for all), against the book's loop (evalpipe.gpt2.generation.generate_naive
  on the book's model: the whole sequence through the model for every new token) on
  --naive-prompts prompts spread over the prompt lengths, both scaled to 110 prompts. Random
  weights never emit <|endoftext|>, so every response runs to max_new_tokens (256): generation
  weighs more here than in a run of a fine-tuned model, whose responses stop earlier.

Not timed: building the model (it stands in for loading GPT-2's weights, alike on both sides)
and starting the processes. The last line is the ratio of the totals, book / evalpipe.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the book's model and step, in bench/finetune.py

TEST_PROMPTS = 110  # the book's test split


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2-medium",
                        help="GPT-2 shape (gpt2-medium as the book; gpt2 for a quick run)")
    parser.add_argument("--layers", type=int, default=0,
                        help="override the preset's number of layers (for a smoke test)")
    parser.add_argument("--emb-dim", type=int, default=0,
                        help="override the preset's width (for a smoke test)")
    parser.add_argument("--max-new-tokens", type=int, default=0,
                        help="both sides (default: RunConfig's generate.max_new_tokens, 256)")
    parser.add_argument("--steps", type=int, default=3,
                        help="fine-tuning steps timed (at least 2), scaled to two epochs")
    parser.add_argument("--naive-prompts", type=int, default=2,
                        help="prompts the book's generation loop runs, scaled to 110")
    parser.add_argument("--prompts", type=int, default=16,
                        help="prompts evalpipe's generate stage runs, scaled to 110 (110: all)")
    parser.add_argument("--dtype", default="defaults",
                        help="evalpipe's finetune.dtype: defaults (RunConfig's), auto, float32 "
                             "or bfloat16; several, comma-separated, are each run against the "
                             "same baseline")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each process (default: torch's own choice)")
    parser.add_argument("--data", default="",
                        help="instruction-data.json (default: ../shared/data/)")
    args = parser.parse_args(argv)
    args.dtypes = args.dtype.split(",")
    unknown = set(args.dtypes) - {"defaults", "auto", "float32", "bfloat16"}
    if unknown:
        parser.error(f"--dtype: unknown {', '.join(sorted(unknown))}")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is timed apart)")
    if not 1 <= args.naive_prompts <= TEST_PROMPTS or not 1 <= args.prompts <= TEST_PROMPTS:
        parser.error(f"--prompts and --naive-prompts must lie between 1 and {TEST_PROMPTS}")
    return args


# -- the book's chapter 7 code (data, training loop, generation), the baseline --------------------

def format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


class InstructionDataset:
    def __init__(self, data, tokenizer):
        self.data = data
        self.encoded_texts = []
        for entry in data:
            instruction_plus_input = format_input(entry)
            response_text = f"\n\n### Response:\n{entry['output']}"
            full_text = instruction_plus_input + response_text
            self.encoded_texts.append(tokenizer.encode(full_text))

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def custom_collate_fn(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None,
                      device="cpu"):
    import torch

    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


def calc_loss_batch(input_batch, target_batch, model, device):
    import torch

    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None):
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    import torch

    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_text_simple(model, idx, max_new_tokens, context_size):
    import torch

    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def generate_and_print_sample(model, tokenizer, device, start_context):
    import torch

    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = torch.tensor(tokenizer.encode(start_context, allowed_special={"<|endoftext|>"}))
    with torch.no_grad():
        token_ids = generate_text_simple(model=model, idx=encoded.unsqueeze(0).to(device),
                                         max_new_tokens=50, context_size=context_size)
    decoded_text = tokenizer.decode(token_ids.squeeze(0).tolist())
    print(decoded_text.replace("\n", " "))
    model.train()


# -- the two sides, each in its own process ------------------------------------------------------

def run_config(args, data: Path, dtype: str = "defaults"):
    """evalpipe's configuration: RunConfig()'s defaults, the book's model shape with random
    weights (and its untied head), the data file, and the dtype (one of --dtype's)."""
    from evalpipe.config import RunConfig
    from evalpipe.gpt2.model import PRESETS

    config = RunConfig()
    shape = PRESETS[args.preset]
    config.data.source = str(data)
    config.model.base = "random"
    config.model.emb_dim, config.model.n_layers, config.model.n_heads = \
        args.emb_dim or shape.emb_dim, args.layers or shape.n_layers, shape.n_heads
    config.model.tie_weights = "false"
    if args.max_new_tokens:
        config.generate.max_new_tokens = args.max_new_tokens
    if dtype != "defaults":
        config.finetune.dtype = dtype
    return config


def train_order(config, n_train: int, steps: int) -> list[list[int]]:
    """The first `steps` batches (example indices) in evalpipe's seeded epoch order."""
    from evalpipe.stages.finetune import epoch_order

    per_epoch = n_train // config.finetune.batch_size
    batches = []
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        order = epoch_order(n_train, config.finetune.seed, epoch)
        size = config.finetune.batch_size
        batches.append(order[position * size:(position + 1) * size])
    return batches


def spread(items: list, count: int, key) -> list:
    """`count` of `items` spread evenly over their order by `key` (shortest to longest)."""
    ordered = sorted(items, key=key)
    if count >= len(ordered):
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / max(count - 1, 1))] for i in range(count)]


class Timer:
    def __init__(self):
        self.clock = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.clock


class BookSide:
    """The book's chapter 7 notebook, as the book runs it."""

    def __init__(self, args, config, workdir: Path):
        import tiktoken  # noqa: F401  (imported here, not in the timed prepare, on both sides)
        import torch
        from finetune import book_model_like

        from evalpipe.gpt2.runtime import load_base

        self.args, self.config, self.workdir = args, config, workdir
        self.device = torch.device("cpu")
        evalpipe_model = load_base(config).model  # the same initial weights as evalpipe's
        self.model = book_model_like(evalpipe_model).train()
        self.model.cfg = evalpipe_model.cfg  # what generate_naive reads (context, device)
        del evalpipe_model
        gc.collect()

    def prepare(self) -> float:
        import tiktoken

        timer = Timer()
        tokenizer = tiktoken.get_encoding("gpt2")
        with open(self.config.data.source, encoding="utf-8") as file:
            data = json.load(file)
        train_portion = int(len(data) * 0.85)
        test_portion = int(len(data) * 0.1)
        self.train_data = data[:train_portion]
        self.test_data = data[train_portion:train_portion + test_portion]
        self.val_data = data[train_portion + test_portion:]
        self.train_dataset = InstructionDataset(self.train_data, tokenizer)
        self.val_dataset = InstructionDataset(self.val_data, tokenizer)
        self.tokenizer = tokenizer
        return timer.seconds()

    def finetune_start(self) -> float:
        import torch
        from torch.utils.data import DataLoader

        timer = Timer()
        collate = partial(custom_collate_fn, device=self.device, allowed_max_length=1024)
        torch.manual_seed(123)
        self.train_loader = DataLoader(self.train_dataset, batch_size=8, collate_fn=collate,
                                       shuffle=True, drop_last=True, num_workers=0)
        self.val_loader = DataLoader(self.val_dataset, batch_size=8, collate_fn=collate,
                                     shuffle=False, drop_last=False, num_workers=0)
        self.collate = collate
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.00005,
                                           weight_decay=0.1)
        with torch.no_grad():  # the notebook's losses before training
            calc_loss_loader(self.train_loader, self.model, self.device, num_batches=5)
            calc_loss_loader(self.val_loader, self.model, self.device, num_batches=5)
        self.losses = []
        return timer.seconds()

    def finetune_step(self, indices: list[int]) -> float:
        timer = Timer()
        input_batch, target_batch = self.collate([self.train_dataset[i] for i in indices])
        self.optimizer.zero_grad()
        loss = calc_loss_batch(input_batch, target_batch, self.model, self.device)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())
        return timer.seconds()

    def finetune_rest(self) -> dict:
        """Each evaluation, sample and save the training run does, timed once."""
        timer = Timer()
        evaluate_model(self.model, self.train_loader, self.val_loader, self.device, 5)
        evaluation = timer.seconds()
        timer = Timer()
        generate_and_print_sample(self.model, self.tokenizer, self.device,
                                  format_input(self.val_data[0]))
        sample = timer.seconds()
        del self.optimizer
        gc.collect()
        timer = Timer()
        import torch

        torch.save(self.model.state_dict(), self.workdir / "gpt2-medium355M-sft.pth")
        return {"evaluation": evaluation, "sample": sample, "end": timer.seconds()}

    def generate(self, count: int) -> dict:
        from evalpipe.gpt2.generation import generate_naive

        chosen = spread(self.test_data, count,
                        key=lambda entry: len(self.tokenizer.encode(format_input(entry))))
        timer = Timer()
        self.model.eval()
        tokens = 0
        for entry in chosen:
            input_text = format_input(entry)
            prompt = self.tokenizer.encode(input_text)
            generation = generate_naive(self.model, prompt, eos_id=50256,
                                        max_new_tokens=self.config.generate.max_new_tokens)
            tokens += len(generation.tokens)
            generated_text = self.tokenizer.decode(prompt + generation.tokens)
            entry["model_response"] = \
                generated_text[len(input_text):].replace("### Response:", "").strip()
        return {"seconds": timer.seconds(), "prompts": len(chosen), "tokens": tokens}


class EvalpipeSide:
    """evalpipe's stages' code at RunConfig()'s defaults."""

    def __init__(self, args, config, workdir: Path):
        import tiktoken  # noqa: F401  (as the book's side)
        import torch

        from evalpipe.gpt2.runtime import finetune_dtype, load_base, resolve_device
        from evalpipe.paths import RunPaths

        self.args, self.config = args, config
        self.paths = RunPaths(workdir / "results", "bench")
        self.settings = config.finetune
        self.device = resolve_device(self.settings.device)
        self.dtype = finetune_dtype(config)
        self.autocast = torch.bfloat16 if self.dtype.dtype == "bfloat16" else None
        self.loaded = load_base(config)
        self.model = self.loaded.model.to(self.device).train()

    def prepare(self) -> float:
        from evalpipe.io import read_jsonl
        from evalpipe.stages import prepare
        from evalpipe.stages.finetune import encode_examples

        timer = Timer()
        prepare.fetch(self.config, self.paths)
        prepare.run(self.config, self.paths)
        self.splits = {name: encode_examples(read_jsonl(self.paths / f"prepare/{name}.jsonl"),
                                             self.config.data.template)
                       for name in ("train", "val", "test")}
        return timer.seconds()

    def loss_of(self, split: str) -> float:
        from evalpipe.stages.finetune import dataset_loss

        return dataset_loss(self.model, self.splits[split], self.settings, self.device,
                            self.max_length, self.autocast)

    def finetune_start(self) -> float:
        from evalpipe.stages.finetune import make_optimizer, seed_everything

        timer = Timer()
        seed_everything(self.settings.seed)
        self.max_length = min(self.settings.max_length or self.loaded.config.context_length,
                              self.loaded.config.context_length)
        self.optimizer = make_optimizer(self.model, self.settings, self.device)
        self.loss_of("test")  # the base model's losses, as the stage computes them first
        self.loss_of("val")
        self.losses = []
        return timer.seconds()

    def finetune_step(self, indices: list[int]) -> float:
        from evalpipe.stages.finetune import batch_loss, collate

        timer = Timer()
        inputs, targets = collate([self.splits["train"][i] for i in indices],
                                  max_length=self.max_length,
                                  mask_instruction=self.settings.mask_instruction)
        self.optimizer.zero_grad()
        loss = batch_loss(self.model, inputs, targets, self.device, self.autocast)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())
        return timer.seconds()

    def finetune_rest(self) -> dict:
        import torch

        from evalpipe.gpt2.weights import save_finetuned
        from evalpipe.io import atomic_open
        from evalpipe.report.plots import plot_losses
        from evalpipe.stages.finetune import CHECKPOINT, rng_states

        out = self.paths.stage_dir("finetune")
        out.mkdir(parents=True, exist_ok=True)
        timer = Timer()
        self.loss_of("val")
        evaluation = timer.seconds()
        timer = Timer()
        with atomic_open(out / CHECKPOINT, "wb") as handle:
            torch.save({"model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "rng_states": rng_states(), "state": {"step": 0}}, handle)
        checkpoint = timer.seconds()
        timer = Timer()
        self.loss_of("test")
        self.loss_of("val")
        del self.optimizer
        gc.collect()
        save_finetuned(self.model.cpu(), self.loaded.config, out, {
            "tokenizer": "gpt2", "template": self.config.data.template, "base_model": "random"})
        plot_losses([{"step": 1, "epoch": 0.01, "tokens_seen": 0, "train_loss": 1.0,
                      "val_loss": 1.0, "lr": 5e-5, "seconds": 0.0}], out / "loss.png")
        (out / CHECKPOINT).unlink()
        end = timer.seconds()
        # The stage's model is gone when the generate stage starts, as in `evalpipe evaluate`.
        del self.model, self.loaded
        gc.collect()
        return {"evaluation": evaluation, "checkpoint": checkpoint, "end": end}

    def generate(self, count: int) -> dict:
        from evalpipe.io import read_jsonl, write_jsonl
        from evalpipe.stages import generate
        from evalpipe.templates import encode, get_template

        test = self.paths / "prepare/test.jsonl"
        records = read_jsonl(test)
        template = get_template(self.config.data.template)
        if count < len(records):  # a share of the prompts, spread over their lengths
            write_jsonl(test, spread(records, count,
                                     key=lambda record: len(encode(template.prompt(record)))))
        timer = Timer()
        generate.run(self.config, self.paths)
        seconds = timer.seconds()
        responses = read_jsonl(self.paths / "generate/responses.jsonl")
        return {"seconds": seconds, "prompts": len(responses),
                "tokens": sum(r["response_tokens"] for r in responses)}


SIDES = {"book": BookSide, "evalpipe": EvalpipeSide}


def worker(side: str, args, data: Path, dtype: str, workdir: Path, log: Path,
           connection) -> None:
    """One side: builds its model, then runs the phases the parent sends, one at a time."""
    with open(log, "w", encoding="utf-8") as output:
        os.dup2(output.fileno(), 1)  # the stages' prints and progress bars go to the log
        os.dup2(output.fileno(), 2)
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            config = run_config(args, data, dtype)
            runner = SIDES[side](args, config, workdir)
            connection.send(("ready", {"threads": torch.get_num_threads(),
                                       "dtype": getattr(runner, "dtype", None)}))
            while True:
                method, argument = connection.recv()
                if method == "stop":
                    break
                result = getattr(runner, method)(*argument)
                sys.stdout.flush()
                connection.send(("ok", result))
            # Peak resident memory of this process (Linux reports KiB).
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            connection.send(("ok", {"peak_bytes": peak, "losses": runner.losses}))
        except BaseException as err:  # reported to the parent, then re-raised
            connection.send(("error", f"{type(err).__name__}: {err}"))
            raise


class Side:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, args, data: Path, workdir: Path, dtype: str = "defaults"):
        context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
        self.name = name
        folder = workdir / f"{name}-{dtype}"
        folder.mkdir()
        self.log = workdir / f"{name}-{dtype}.log"
        self.connection, child = context.Pipe()
        self.process = context.Process(target=worker, args=(
            "book" if name == "book" else "evalpipe", args, data, dtype, folder, self.log,
            child), daemon=True)
        self.process.start()
        self.info = self._answer()

    def _answer(self):
        if not self.connection.poll(6 * 3600):
            raise SystemExit(f"{self.name}: no answer in six hours (log: {self.log})")
        status, value = self.connection.recv()
        if status == "error":
            raise SystemExit(f"{self.name} failed: {value} (log: {self.log})")
        return value

    def call(self, method: str, *argument):
        self.connection.send((method, argument))
        return self._answer()

    def finish(self) -> dict:
        self.connection.send(("stop", ()))
        result = self._answer()
        self.process.join(60)
        return result


# -- the benchmark ---------------------------------------------------------------------------------

def epoch_counts(config, n_train: int) -> dict:
    """How often a two-epoch run does each thing, from its settings."""
    settings = config.finetune
    per_epoch = n_train // settings.batch_size
    total = per_epoch * settings.epochs
    steps = range(1, total + 1)
    every = settings.eval_interval
    return {
        "steps": total,
        # the book: evaluate_model at global_step 0, 5, 10, ... (eval_freq 5)
        "book_evaluations": math.ceil(total / 5),
        "book_samples": settings.epochs,
        # evalpipe's stage: every eval_interval steps, at each epoch's end and at the last step
        "evaluations": sum(1 for s in steps if (every and s % every == 0) or s % per_epoch == 0
                           or s == total),
        "checkpoints": sum(1 for s in steps if s % per_epoch == 0 or (
            settings.checkpoint_interval and s % settings.checkpoint_interval == 0)),
    }


def run_side(side: Side, args, order, counts) -> dict:
    """Every phase of one side: {"times": seconds per phase, scaled, "notes", "peak", ...}."""
    load = os.getloadavg()[0]
    times = {"prepare": statistics.median(side.call("prepare") for _ in range(3))}
    start = side.call("finetune_start")
    steps = []
    for indices in order:
        steps.append(side.call("finetune_step", indices))
    rest = side.call("finetune_rest")
    step = statistics.median(steps[1:])
    training = steps[0] + step * (counts["steps"] - 1)
    if side.name == "book":
        times["finetune"] = (start + training + rest["evaluation"] * counts["book_evaluations"]
                             + rest["sample"] * counts["book_samples"] + rest["end"])
        finetune_note = (f"step {step:.2f} s; {counts['book_evaluations']} evaluations of "
                         f"{rest['evaluation']:.2f} s, {counts['book_samples']} samples of "
                         f"{rest['sample']:.2f} s, losses before {start:.2f} s, save "
                         f"{rest['end']:.2f} s")
        generated = side.call("generate", args.naive_prompts)
    else:
        times["finetune"] = (start + training + rest["evaluation"] * counts["evaluations"]
                             + rest["checkpoint"] * counts["checkpoints"] + rest["end"])
        finetune_note = (f"step {step:.2f} s; {counts['evaluations']} evaluations of "
                         f"{rest['evaluation']:.2f} s, {counts['checkpoints']} checkpoints of "
                         f"{rest['checkpoint']:.2f} s, base losses {start:.2f} s, final losses "
                         f"and save {rest['end']:.2f} s")
        generated = side.call("generate", args.prompts)
    times["generate"] = generated["seconds"] * TEST_PROMPTS / generated["prompts"]
    finished = side.finish()
    print(f"{side.name}: prepare {times['prepare']:.2f} s; finetune {times['finetune']:.0f} s "
          f"for {counts['steps']} steps ({finetune_note}); generate {times['generate']:.0f} s "
          f"for {TEST_PROMPTS} prompts ({generated['prompts']} prompts, {generated['tokens']} "
          f"tokens in {generated['seconds']:.1f} s, "
          f"{generated['tokens'] / generated['seconds']:.1f} tokens/s); load average "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return {"times": times, "peak": finished["peak_bytes"], "losses": finished["losses"]}


def main(argv=None):
    args = parse_args(argv)
    from finetune import SHARED_DATA, use_offline_tokenizer

    use_offline_tokenizer()
    data = Path(args.data or SHARED_DATA / "instruction-data.json")
    if not data.is_file():
        raise SystemExit(f"{data}: not found (--data PATH of instruction-data.json)")
    config = run_config(args, data)
    records = json.loads(data.read_text(encoding="utf-8"))
    n_train = int(len(records) * config.data.train_fraction)
    counts = epoch_counts(config, n_train)
    order = train_order(config, n_train, args.steps)
    shape = "".join(f", {value} {name}" for value, name in (
        (args.layers, "layers"), (args.emb_dim, "wide")) if value)
    print(f"GPT-2 {args.preset}{shape} (random weights, untied head), {len(records)} examples, "
          f"{counts['steps']} steps of batch {config.finetune.batch_size} over "
          f"{config.finetune.epochs} epochs ({args.steps} timed), {TEST_PROMPTS} prompts x "
          f"{config.generate.max_new_tokens} new tokens ({args.prompts} generated by evalpipe, "
          f"{args.naive_prompts} by the book's loop); {os.cpu_count()} cores", flush=True)

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        book = Side("book", args, data, Path(folder))
        print(f"book: float32, {book.info['threads']} torch threads", flush=True)
        results["book"] = run_side(book, args, order, counts)
        for dtype in args.dtypes:
            side = Side(f"evalpipe {dtype}", args, data, Path(folder), dtype)
            choice = side.info["dtype"]
            name = f"evalpipe {choice.dtype}"
            if name in results:  # "auto" and the dtype it resolves to, both asked for
                name += f" ({dtype})"
            print(f"{name}: computes in {choice.dtype} ({choice.reason}), "
                  f"{side.info['threads']} torch threads", flush=True)
            results[name] = run_side(side, args, order, counts)

    book = results["book"]
    for name, result in results.items():
        if name != "book":
            worst = max(abs(a - b) / abs(b) for a, b in zip(result["losses"], book["losses"]))
            print(f"{name}: fine-tuning losses {' '.join(f'{x:.4f}' for x in result['losses'])} "
                  f"(book {' '.join(f'{x:.4f}' for x in book['losses'])}), max relative "
                  f"difference {worst:.1e}")
    names = list(results)
    totals = {name: sum(results[name]["times"].values()) for name in names}

    def row(label: str, seconds: dict[str, float]) -> str:
        """Each side's seconds, and the book's over each evalpipe side's."""
        return (f"{label:<12}" + "".join(f"{seconds[name]:>9.1f}s" + (
            f" {seconds['book'] / seconds[name]:>6.2f}x" if name != "book" else " " * 8)
            for name in names)).rstrip()

    print("\n" + f"{'':<12}" + "".join(f"{name:>18}" for name in names))
    for phase in ("prepare", "finetune", "generate"):
        print(row(phase, {name: results[name]["times"][phase] for name in names}))
    print(row("total", totals))
    print((f"{'peak memory':<12}" + "".join(f"{results[name]['peak'] / 2**30:>8.2f}GB"
                                            + " " * 8 for name in names)).rstrip())
    ours = [name for name in names if name != "book"]
    for name in ours:
        label = "" if len(ours) == 1 else f", {name}"
        print(f"end-to-end speed-up{label}: {totals['book'] / totals[name]:.1f}x")


if __name__ == "__main__":
    main()
