"""Benchmark: the generate stage's batched KV-cache generation (generate_batch) against the
book's loop (generate_naive), on the real test prompts of the book's data.

    python bench/generate.py                          # the stage's defaults
    python bench/generate.py --batch-sizes 8,16,32,64 # the curve over batch sizes too
    python bench/generate.py --preset gpt2-medium --naive-prompts 2

Prompts: the 110 test records of the book's split of instruction-data.json (the 10% after
the first 85%, in file order), in the alpaca template, tokenized by GPT-2's tokenizer, as the
prepare and generate stages make them. Settings: the generate stage's defaults, greedy,
max_new_tokens 256, end-of-text on, the "auto" batch size for this machine, fp32, prompts
grouped by length as the stage groups them (length_batches). The model is GPT-2 124M with
random weights, which never emit end-of-text, so every response runs to 256 tokens: the
worst case for both paths (a fine-tuned model stops most responses far earlier).

The book's loop is slow (seconds per token near the end), so it runs on --naive-prompts
prompts spread over the lengths, each right after the batch that holds it, so that the load of
the shared machine falls on both alike; tokens per second are compared. Both are greedy, so
they must give the same tokens: the script checks it on the prompts both ran. bf16 is timed
on all prompts as well, with the share of prompts whose bf16 response equals fp32's. The last
line is the speed-up at the defaults.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch

# The data and the tokenizer files are found as bench/finetune.py finds them (this script's
# folder is on sys.path when it runs).
from finetune import SHARED_DATA, use_offline_tokenizer

from evalpipe.config import RunConfig
from evalpipe.gpt2.generation import generate_batch, generate_naive, length_batches
from evalpipe.gpt2.model import PRESETS, GPTModel
from evalpipe.gpt2.runtime import generation_batch_size


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    parser.add_argument("--new-tokens", type=int, default=RunConfig().generate.max_new_tokens)
    parser.add_argument("--batch-sizes", default="",
                        help="comma-separated batch sizes to time as well, fp32 (the curve)")
    parser.add_argument("--naive-prompts", type=int, default=4,
                        help="run the book's loop on this many prompts, spread over the lengths")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 run")
    parser.add_argument("--data", default=str(SHARED_DATA / "instruction-data.json"))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's own choice, one per core)")
    parser.add_argument("--seed", type=int, default=123)
    return parser.parse_args()


def test_prompts(path: str) -> list[list[int]]:
    """The book's test prompts, as the prepare and generate stages make them."""
    from evalpipe.stages.prepare import split
    from evalpipe.templates import encode, get_template

    records = json.loads(Path(path).read_text(encoding="utf-8"))
    template = get_template("alpaca")
    return [encode(template.prompt(record))
            for record in split(records, RunConfig().data)["test"]]


def run_batches(model, prompts, batches, new_tokens, between=None):
    """Responses to every prompt, batch by batch; `between(batch)` runs after each batch and
    is not timed. Returns (responses by prompt index, seconds)."""
    responses, seconds = {}, 0.0
    for batch in batches:
        clock = time.perf_counter()
        generations = generate_batch(model, [prompts[i] for i in batch],
                                     max_new_tokens=new_tokens, eos_id=50256)
        seconds += time.perf_counter() - clock
        responses.update(zip(batch, generations))
        if between:
            between(batch)
    return responses, seconds


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_offline_tokenizer()
    prompts = test_prompts(args.data)
    lengths = [len(prompt) for prompt in prompts]
    torch.manual_seed(args.seed)
    model = GPTModel(PRESETS[args.preset]).eval()
    longest = min(max(lengths) + args.new_tokens, model.cfg.context_length)
    device = torch.device("cpu")
    auto = generation_batch_size("auto", device, model.cfg, longest, torch.float32)
    total = len(prompts) * args.new_tokens
    print(f"GPT-2 {args.preset} (random weights: they never emit end-of-text, so every response "
          f"runs to {args.new_tokens} tokens, the worst case for both), the {len(prompts)} test "
          f"prompts of the book's data ({min(lengths)}-{max(lengths)} tokens), greedy, "
          f"batch size auto = {auto}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    with torch.inference_mode():
        generate_batch(model, prompts[:2], max_new_tokens=4)  # warm-up

        for batch_size in [int(size) for size in args.batch_sizes.split(",") if size]:
            _, seconds = run_batches(model, prompts, length_batches(lengths, batch_size),
                                     args.new_tokens)
            print(f"generate_batch, fp32, batch size {batch_size:>3}: {total} tokens in "
                  f"{seconds:7.1f} s = {total / seconds:7.1f} tokens/s", flush=True)

        # The defaults, with the book's loop on the chosen prompts after each batch.
        count = min(args.naive_prompts, len(prompts))
        by_length = sorted(range(len(prompts)), key=lambda i: lengths[i])
        chosen = {by_length[round(i * (len(prompts) - 1) / max(count - 1, 1))]
                  for i in range(count)}
        naive, naive_seconds = {}, 0.0

        def run_naive(batch):
            nonlocal naive_seconds
            for index in sorted(chosen & set(batch)):
                clock = time.perf_counter()
                naive[index] = generate_naive(model, prompts[index],
                                              max_new_tokens=args.new_tokens, eos_id=50256)
                naive_seconds += time.perf_counter() - clock

        load_before = os.getloadavg()[0]
        fp32, seconds = run_batches(model, prompts, length_batches(lengths, auto),
                                    args.new_tokens, run_naive)
        made = sum(len(generation.tokens) for generation in fp32.values())
        batched_speed = made / seconds
        print(f"generate_batch, fp32, batch size auto = {auto}: {made} tokens in {seconds:7.1f} "
              f"s = {batched_speed:7.1f} tokens/s", flush=True)
        naive_made = sum(len(generation.tokens) for generation in naive.values())
        naive_speed = naive_made / naive_seconds
        print(f"generate_naive (the book's loop), one prompt at a time, {count} prompts of "
              f"{', '.join(str(lengths[i]) for i in sorted(naive, key=lengths.__getitem__))} "
              f"tokens: {naive_made} tokens in {naive_seconds:7.1f} s = {naive_speed:7.2f} "
              f"tokens/s (load average {load_before:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after)", flush=True)
        same = sum(naive[index] == fp32[index] for index in naive)
        print(f"same tokens as generate_naive: {same} of {len(naive)} prompts")

        if not args.no_bf16:
            bf16_model = copy.deepcopy(model).to(torch.bfloat16)
            bf16, bf16_seconds = run_batches(bf16_model, prompts, length_batches(lengths, auto),
                                             args.new_tokens)
            bf16_made = sum(len(generation.tokens) for generation in bf16.values())
            agree = sum(bf16[index] == fp32[index] for index in fp32)
            print(f"generate_batch, bf16, batch size auto = {auto}: {bf16_made} tokens in "
                  f"{bf16_seconds:7.1f} s = {bf16_made / bf16_seconds:7.1f} tokens/s, "
                  f"{bf16_made / bf16_seconds / batched_speed:.2f}x fp32's; the same response "
                  f"as fp32 for {agree} of {len(fp32)} prompts "
                  f"({agree / len(fp32):.0%}); {bf16_made / bf16_seconds / naive_speed:.1f}x "
                  f"the book's loop", flush=True)

    print(f"speed-up at the defaults: {batched_speed / naive_speed:.1f}x")


if __name__ == "__main__":
    main()
