"""Benchmark: batched KV-cache generation (generate_batch) against the book's loop
(generate_naive), on GPT-2 124M with random weights.

    python bench/generate.py                       # 32 prompts x 64 new tokens
    python bench/generate.py --naive-prompts 8     # the slow baseline on every 4th prompt only

Prompts are random token ids with lengths drawn from 35..65 tokens, the range of the book's
Alpaca-style instruction prompts under the GPT-2 tokenizer. Random weights never produce
end-of-text on purpose, so eos is switched off and every prompt gets exactly --new-tokens
tokens. The baseline may run on a subset of the prompts (spread over the lengths, so the work
per token is alike); tokens per second are comparable either way. Greedy decoding, so both
paths must produce the same tokens; the script checks it on the prompts both ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

import torch

from evalpipe.gpt2.generation import generate_batch, generate_naive
from evalpipe.gpt2.model import PRESETS, GPTModel


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,16,32",
                        help="comma-separated batch sizes to time; the fastest is compared")
    parser.add_argument("--naive-prompts", type=int, default=0,
                        help="run the baseline on this many prompts (default: all)")
    parser.add_argument("--min-length", type=int, default=35)
    parser.add_argument("--max-length", type=int, default=65)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's own choice, one per core)")
    parser.add_argument("--seed", type=int, default=123)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(50257) for _ in range(rng.randint(args.min_length, args.max_length))]
               for _ in range(args.prompts)]
    prompts.sort(key=len)  # as the generate stage does: similar lengths share a batch
    torch.manual_seed(args.seed)
    model = GPTModel(PRESETS["gpt2"]).eval()
    total_tokens = args.prompts * args.new_tokens
    print(f"GPT-2 124M (random weights), {args.prompts} prompts of "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens, {args.new_tokens} new "
          f"tokens each, greedy, fp32, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")

    with torch.inference_mode():
        generate_batch(model, prompts[:2], max_new_tokens=4, eos_id=None)  # warm-up

        batched_speed, batched_outputs = {}, {}
        for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
            clock = time.perf_counter()
            outputs = []
            for start in range(0, len(prompts), batch_size):
                outputs += generate_batch(model, prompts[start:start + batch_size],
                                          max_new_tokens=args.new_tokens, eos_id=None)
            seconds = time.perf_counter() - clock
            assert sum(len(g.tokens) for g in outputs) == total_tokens
            batched_speed[batch_size] = total_tokens / seconds
            batched_outputs[batch_size] = outputs
            print(f"generate_batch, batch size {batch_size:>2}: {total_tokens} tokens in "
                  f"{seconds:7.1f} s = {batched_speed[batch_size]:7.1f} tokens/s", flush=True)
        best = max(batched_speed, key=batched_speed.get)

        count = args.naive_prompts or len(prompts)
        step = len(prompts) / count
        chosen = [round(i * step) for i in range(count)]  # spread over the lengths
        clock = time.perf_counter()
        naive_outputs = [generate_naive(model, prompts[i], max_new_tokens=args.new_tokens,
                                        eos_id=None) for i in chosen]
        seconds = time.perf_counter() - clock
        naive_speed = count * args.new_tokens / seconds
        print(f"generate_naive (the book's loop), one prompt at a time, {count} prompts: "
              f"{count * args.new_tokens} tokens in {seconds:7.1f} s = {naive_speed:7.1f} "
              f"tokens/s", flush=True)

    same = sum(naive == batched_outputs[best][i] for naive, i in zip(naive_outputs, chosen))
    print(f"same tokens as generate_naive: {same} of {count} prompts")
    print(f"speed-up, batch size {best} against the book's loop: "
          f"{batched_speed[best] / naive_speed:.1f}x")


if __name__ == "__main__":
    main()
