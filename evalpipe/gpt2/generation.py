"""Text generation: the book's loop (`generate_naive`) and a fast batched one (`generate_batch`)
that gives the same tokens.

The book (chapter 5) feeds the whole context through the model for every new token. The fast
path runs each prompt through the model once, keeps every layer's keys and values in a
KVCache, and then feeds one token per sequence per step; prompts of different lengths share
one batch by left padding with an attention mask. Greedy decoding gives the book's tokens
(the tests check it token for token).

Near the context length the book crops: every step sees only the last `context_length`
tokens, so positions shift by one each step and nothing cached stays valid. generate_batch
does the same: once a sequence would outgrow the context, every further step recomputes the
whole cropped window without the cache, exactly as the book's loop, and as slowly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evalpipe.gpt2.model import GPTConfig, GPTModel

# The batch size "auto" picks on a CPU: tokens per second grow with the batch up to about 64
# for GPT-2 124M on 2 cores (docs/performance.md, "Generation"), while the KV cache to hold
# grows with it.
CPU_BATCH_SIZE = 64
# On a GPU a larger batch keeps paying off for these model sizes until memory runs out.
GPU_BATCH_SIZE = 128
# The KV cache takes at most this share of the free memory: the model, the activations, the
# rest of the process and the other programs need the remainder.
CACHE_MEMORY_SHARE = 0.25


def kv_cache_bytes(config: GPTConfig, max_length: int, dtype: torch.dtype) -> int:
    """Bytes of one sequence's KV cache for `max_length` positions: keys and values of every
    layer."""
    return 2 * config.n_layers * config.emb_dim * max_length * dtype.itemsize


def auto_batch_size(device_type: str, config: GPTConfig, max_length: int, dtype: torch.dtype,
                    free_memory: int) -> int:
    """The batch size that suits the device (CPU_BATCH_SIZE on a CPU, GPU_BATCH_SIZE on
    anything else), lowered so that the batch's KV cache of `max_length` positions takes at
    most CACHE_MEMORY_SHARE of `free_memory` bytes; at least 1."""
    preferred = CPU_BATCH_SIZE if device_type == "cpu" else GPU_BATCH_SIZE
    fits = int(free_memory * CACHE_MEMORY_SHARE) // kv_cache_bytes(config, max_length, dtype)
    return max(1, min(preferred, fits))


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The indices of prompts of these lengths grouped into batches of at most `batch_size`,
    shortest first, so that a batch's prompts have similar lengths and little is padding.
    The batches are as even as they can be (110 prompts at 32: 28, 28, 27, 27, not 32, 32,
    32, 14): every batch runs until its longest response ends, so four batches of 28 cost
    less than three of 32 and one of 14."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    count = math.ceil(len(order) / batch_size)
    size, larger = divmod(len(order), count) if count else (0, 0)
    batches, start = [], 0
    for number in range(count):
        end = start + size + (number < larger)
        batches.append(order[start:end])
        start = end
    return batches


@dataclass
class Generation:
    tokens: list[int]  # the new tokens: no prompt, no end-of-text token
    stop_reason: Literal["eos", "length"]  # produced eos_id, or reached max_new_tokens


def next_tokens(logits: torch.Tensor, *, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `logits` (B, vocab_size), as the book's `generate` picks it: keep
    the top_k logits, then sample at `temperature`, or take the argmax when it is 0."""
    if top_k is not None:
        top_logits, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
        logits = logits.masked_fill(logits < top_logits[:, -1:], float("-inf"))
    if temperature > 0.0:
        probs = torch.softmax(logits / temperature, dim=-1)
        if generator is not None and generator.device != probs.device:
            # A CPU generator drives sampling wherever the model runs, so a seed gives the
            # same tokens on every device.
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(
                logits.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.argmax(logits, dim=-1)


def _check_arguments(model: GPTModel, prompts: list[list[int]], max_new_tokens: int,
                     temperature: float, top_k: int | None) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    vocab_size = model.cfg.vocab_size
    for number, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {number} is empty")
        if min(prompt) < 0 or max(prompt) >= vocab_size:
            raise ValueError(f"prompt {number} holds a token id outside 0..{vocab_size - 1}")


class _EvalMode:
    """Dropout off while generating; the model's mode is restored afterwards."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def generate_naive(model: GPTModel, prompt: list[int], *, max_new_tokens: int,
                   eos_id: int | None = 50256, temperature: float = 0.0,
                   top_k: int | None = None,
                   generator: torch.Generator | None = None) -> Generation:
    """The book's `generate` loop for one prompt: no cache, the whole (cropped) context
    recomputed for every token. The reference for generate_batch, and its benchmark baseline."""
    _check_arguments(model, [prompt], max_new_tokens, temperature, top_k)
    context_size = model.cfg.context_length
    device = model.tok_emb.weight.device
    idx = torch.tensor([prompt], device=device)
    new_tokens: list[int] = []
    with _EvalMode(model), torch.inference_mode():
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -context_size:]
            logits = model(idx_cond)[:, -1, :]
            idx_next = next_tokens(logits, temperature=temperature, top_k=top_k,
                                   generator=generator)
            if idx_next.item() == eos_id:
                return Generation(new_tokens, "eos")
            new_tokens.append(idx_next.item())
            idx = torch.cat((idx, idx_next[:, None]), dim=1)
    return Generation(new_tokens, "length")


def generate_batch(model: GPTModel, prompts: list[list[int]], *, max_new_tokens: int,
                   eos_id: int | None = 50256, temperature: float = 0.0,
                   top_k: int | None = None,
                   generator: torch.Generator | None = None) -> list[Generation]:
    """Continue every prompt (token ids) by up to `max_new_tokens` tokens, all in one batch.

    Greedy when temperature is 0, else temperature and top-k sampling (the book's rules).
    A sequence stops at `eos_id` (None or -1: never) and leaves the batch; the others go on.
    A prompt longer than the context keeps its last `context_length` tokens, as in the book.
    """
    _check_arguments(model, prompts, max_new_tokens, temperature, top_k)
    results = [Generation([], "length") for _ in prompts]
    if not prompts or max_new_tokens == 0:
        return results
    context_length = model.cfg.context_length
    device = model.tok_emb.weight.device
    prompts = [prompt[-context_length:] for prompt in prompts]

    # Left padding lines up every prompt's last token in the last column, so one step
    # appends one column for all of them. The pad id is arbitrary: the mask hides it.
    width = max(len(prompt) for prompt in prompts)
    tokens = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    real = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = torch.tensor(prompt, device=device)
        real[row, width - len(prompt):] = 1
    rows = list(range(len(prompts)))  # which prompt each batch row belongs to

    def mask_if_padded(mask):
        return None if bool(mask.all()) else mask  # no mask: the faster plain causal path

    with _EvalMode(model), torch.inference_mode():
        # Room for what this batch can reach, not the whole context: a GPT-2 medium cache
        # for 1024 positions is 1.6 GB at batch 8.
        kv_cache = model.new_kv_cache(len(prompts),
                                      min(context_length, width + max_new_tokens))
        logits = model(tokens, kv_cache=kv_cache, attention_mask=mask_if_padded(real),
                       last_token_only=True)[:, -1].float()  # bfloat16 models: sample in fp32
        for step in range(max_new_tokens):
            chosen = next_tokens(logits, temperature=temperature, top_k=top_k,
                                 generator=generator)
            going_on = []
            for batch_row, token in enumerate(chosen.tolist()):
                result = results[rows[batch_row]]
                if token == eos_id:
                    result.stop_reason = "eos"
                else:
                    result.tokens.append(token)
                    going_on.append(batch_row)
            if not going_on or step == max_new_tokens - 1:
                break

            if len(going_on) < len(rows):
                # Finished sequences leave the batch, and so do the padding columns that
                # only they needed.
                keep = torch.tensor(going_on, device=device)
                padding = real.shape[1] - real[keep].sum(dim=1)
                first_column = int(padding.min())
                tokens, real = tokens[keep, first_column:], real[keep, first_column:]
                chosen = chosen[keep]
                rows = [rows[batch_row] for batch_row in going_on]
                if kv_cache is not None:
                    kv_cache.keep(keep, first_column)
            tokens = torch.cat((tokens, chosen[:, None]), dim=1)
            real = torch.cat((real, torch.ones_like(chosen)[:, None]), dim=1)

            if kv_cache is not None and kv_cache.length < kv_cache.max_length:
                logits = model(chosen[:, None], kv_cache=kv_cache,
                               attention_mask=mask_if_padded(real),
                               last_token_only=True)[:, -1].float()
            else:
                # The window is full: from now on, the book's cropping (see the module doc).
                kv_cache = None
                window, window_real = tokens[:, -context_length:], real[:, -context_length:]
                logits = model(window, attention_mask=mask_if_padded(window_real),
                               last_token_only=True)[:, -1].float()
    return results
