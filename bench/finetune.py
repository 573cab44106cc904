"""Benchmark: evalpipe's fine-tuning step against a plain implementation of the book's step,
on GPT-2 124M with random weights and real batches of the book's instruction data.

    python bench/finetune.py                      # 12 steps, batch 8, fp32 and bf16
    python bench/finetune.py --variants book,model,logits_for,fp32   # the ideas one by one
    python bench/finetune.py --mask-instruction   # the book's exercise 7.2 (prompt not in loss)
    python bench/finetune.py --preset gpt2-medium --steps 6

The baseline is the book's code, copied here: chapter 4's GPTModel (attention written out
with the causal-mask buffer, masked_fill, softmax and dropout; the book's LayerNorm, GELU and
FeedForward) and chapter 5's training step (logits for every position, cross-entropy over
the flattened batch with ignore_index -100, torch.optim.AdamW with its defaults but the
book's lr 5e-5 and weight decay 0.1). Its output head is the book's: a separate matrix that
starts as a copy of the token embedding (chapter 5's load_weights_into_gpt) and is trained
apart from it. evalpipe's variants train the same untied model (model.tie_weights = "false",
as configs/book.toml), so that all train the same parameters.

Both start from the same random weights and train on the same batches: the first --steps
batches of the book's training split (the first 85% of instruction-data.json) in evalpipe's
seeded epoch order, padded and masked by evalpipe's collate, which is the book's
custom_collate_fn. Steps run interleaved (one step of each variant in turn, the order
rotating), because the machine's load changes under a benchmark and interleaving spreads it
over all variants alike. Tokens are counted as the book counts tokens seen: every input token
of the batch, padding included, the same count for every variant. The speed-up is the median
over the timed steps of the baseline's time for a batch over the variant's time for the same
batch; tokens per second are total tokens over total time. The first --warmup steps are not
timed (allocation of the optimizer state, first-touch of memory).

Each variant's loss at every step is compared with the baseline's: the same trajectory in
fp32 (within 1e-4 relative) and within 1% with bf16 autocast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evalpipe.gpt2.model import PRESETS, GPTModel
from evalpipe.stages.finetune import (
    IGNORE_INDEX,
    batch_loss,
    collate,
    encode_examples,
    epoch_order,
    make_optimizer,
)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EVALPIPE_SHARED", REPO.parent / "shared")) / "data"
TIKTOKEN_CACHE_NAMES = {  # tiktoken names a cached file by the SHA-1 of its URL
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}
FP32_TOLERANCE = 1e-4  # relative, per step
BF16_TOLERANCE = 1e-2


# -- the book's model and training step (chapters 4 and 5), the baseline ------------------------

class BookMultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask",
                             torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, _ = x.shape
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
        attn_scores.masked_fill_(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


class BookLayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class BookGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(
            torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class BookFeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]), BookGELU(),
                                    nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]))

    def forward(self, x):
        return self.layers(x)


class BookTransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = BookMultiHeadAttention(
            d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
            num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"])
        self.ff = BookFeedForward(cfg)
        self.norm1 = BookLayerNorm(cfg["emb_dim"])
        self.norm2 = BookLayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut
        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class BookGPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(
            *[BookTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = BookLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        seq_len = in_idx.shape[1]
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = self.drop_emb(tok_embeds + pos_embeds)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)


def book_loss(model, inputs, targets, device, autocast_dtype=None):
    """Chapter 5's calc_loss_batch (its ignore_index -100 is cross_entropy's default)."""
    inputs, targets = inputs.to(device), targets.to(device)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def book_model_like(model: GPTModel) -> BookGPTModel:
    """The book's GPTModel with the same weights as `model` (the same key names; the book's
    causal-mask buffers are its own) and the same head tying."""
    cfg = model.cfg
    book = BookGPTModel({"vocab_size": cfg.vocab_size, "context_length": cfg.context_length,
                         "emb_dim": cfg.emb_dim, "n_heads": cfg.n_heads,
                         "n_layers": cfg.n_layers, "drop_rate": cfg.drop_rate,
                         "qkv_bias": cfg.qkv_bias})
    missing, unexpected = book.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.endswith("att.mask") for key in missing), \
        (missing, unexpected)
    if cfg.tie_weights:
        book.out_head.weight = book.tok_emb.weight
    return book


# -- the benchmark ------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object  # (model, inputs, targets, device, autocast_dtype) -> loss
    autocast_dtype: torch.dtype | None = None
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # timed steps only

    def step(self, inputs, targets, device) -> float:
        clock = time.perf_counter()
        loss = self.loss_fn(self.model, inputs, targets, device, self.autocast_dtype)
        loss.backward()
        self.optimizer.step()
        # The book zeroes the gradients before each step; after it is the same, and the
        # variants waiting for their turn do not hold 0.5 GB of gradients each.
        self.optimizer.zero_grad()
        seconds = time.perf_counter() - clock
        self.losses.append(loss.item())
        return seconds

    @property
    def tolerance(self) -> float:
        return FP32_TOLERANCE if self.autocast_dtype is None else BF16_TOLERANCE


VARIANTS = {
    "book": "the baseline, the book's model and step",
    "model": "evalpipe's GPTModel (SDPA, fused LayerNorm and GELU kernels), the book's step",
    "logits_for": "evalpipe's model and batch_loss (logits_for), the default AdamW",
    "fp32": "evalpipe's training step: batch_loss and make_optimizer (fused AdamW)",
    "bf16": "evalpipe's training step with finetune.dtype = 'bfloat16' (autocast)",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, default=0, help="override the preset's layers")
    parser.add_argument("--steps", type=int, default=12, help="training steps, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-instruction", action="store_true",
                        help="leave the prompt out of the loss (the book's exercise 7.2)")
    parser.add_argument("--variants", default="book,fp32,bf16",
                        help="comma-separated, from: " + "; ".join(
                            f"{name}: {text}" for name, text in VARIANTS.items()))
    parser.add_argument("--data", default=str(SHARED_DATA / "instruction-data.json"))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's own choice, one per core)")
    parser.add_argument("--seed", type=int, default=123)
    return parser.parse_args()


def use_offline_tokenizer() -> None:
    """Point tiktoken at the shared GPT-2 BPE files, unless TIKTOKEN_CACHE_DIR is set."""
    bpe = SHARED_DATA / "gpt2-bpe"
    if os.environ.get("TIKTOKEN_CACHE_DIR") or not bpe.is_dir():
        return
    cache = Path(tempfile.mkdtemp(prefix="tiktoken-cache-"))
    for filename, cache_name in TIKTOKEN_CACHE_NAMES.items():
        shutil.copyfile(bpe / filename, cache / cache_name)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


def book_batches(path: str, batch_size: int, steps: int, seed: int, mask_instruction: bool):
    """The first `steps` training batches of the book's data, as the finetune stage makes
    them (in the book's split the first 85% are the training examples)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    train = encode_examples(records[:int(len(records) * 0.85)], "alpaca")
    order = epoch_order(len(train), seed, 0)
    per_epoch = len(train) // batch_size
    batches = []
    for step in range(steps):  # past one epoch, continue with the next epoch's order
        epoch, position = divmod(step, per_epoch)
        if position == 0 and epoch:
            order = epoch_order(len(train), seed, epoch)
        chosen = order[position * batch_size:(position + 1) * batch_size]
        batches.append(collate([train[i] for i in chosen], mask_instruction=mask_instruction))
    return batches


def main():
    args = parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)} "
                         f"(known: {', '.join(VARIANTS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    use_offline_tokenizer()
    device = torch.device("cpu")
    batches = book_batches(args.data, args.batch_size, args.steps, args.seed,
                           args.mask_instruction)

    # The book's model: the output head untied, a copy of the token embedding.
    config = dataclasses.replace(PRESETS[args.preset], tie_weights=False,
                                 n_layers=args.layers or PRESETS[args.preset].n_layers)
    torch.manual_seed(args.seed)
    initial = GPTModel(config).train()
    with torch.no_grad():
        initial.out_head.weight.copy_(initial.tok_emb.weight)
    settings = argparse.Namespace(lr=5e-5, weight_decay=0.1)

    def book_variant(name, initial):
        model = book_model_like(initial).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
        return Variant(name, model, optimizer, book_loss)

    def evalpipe_variant(name, initial, loss_fn=batch_loss, fused=True, autocast_dtype=None):
        model = GPTModel(config).train()
        model.load_state_dict(initial.state_dict())
        optimizer = (make_optimizer(model, settings, device) if fused else
                     torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1))
        return Variant(name, model, optimizer, loss_fn, autocast_dtype)

    evalpipe_variants = {  # name: (label, options)
        "model": ("evalpipe model, book step", {"loss_fn": book_loss, "fused": False}),
        "logits_for": ("evalpipe model, logits_for", {"fused": False}),
        "fp32": ("evalpipe fp32", {}),
        "bf16": ("evalpipe bf16 autocast", {"autocast_dtype": torch.bfloat16}),
    }
    names = [name for name in args.variants.split(",") if name != "book"]
    baseline = book_variant("book (baseline)", initial)
    variants = [baseline] + [evalpipe_variant(evalpipe_variants[name][0], initial,
                                              **evalpipe_variants[name][1]) for name in names]
    del initial

    tokens = [inputs.numel() for inputs, _ in batches]
    counted = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in batches)
    print(f"GPT-2 {args.preset}{f' ({config.n_layers} layers)' if args.layers else ''}, random "
          f"weights, batch {args.batch_size}, {args.steps} steps ({args.warmup} untimed), "
          f"{sum(tokens)} tokens of which {counted / sum(tokens):.0%} targets count"
          f"{' (prompt masked)' if args.mask_instruction else ''}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores", flush=True)

    for step, (inputs, targets) in enumerate(batches):
        rotation = step % len(variants)  # who goes first changes from step to step
        for variant in variants[rotation:] + variants[:rotation]:
            seconds = variant.step(inputs, targets, device)
            if step >= args.warmup:
                variant.seconds.append(seconds)
        print(f"step {step + 1:>3} ({tuple(inputs.shape)}): " + "  ".join(
            f"{v.losses[-1]:.6f} {v.seconds[-1] if step >= args.warmup else float('nan'):5.2f}s"
            for v in variants), flush=True)

    timed_tokens = sum(tokens[args.warmup:])
    print(f"\n{'variant':<36} {'tokens/s':>9} {'speed-up':>9}   loss vs baseline")
    for variant in variants:
        speed = timed_tokens / sum(variant.seconds)
        ratio = statistics.median(b / v for b, v in zip(baseline.seconds, variant.seconds))
        worst = max(abs(v - b) / abs(b) for v, b in zip(variant.losses, baseline.losses))
        verdict = ("" if variant is baseline else
                   f"max rel. diff {worst:.1e} over {len(variant.losses)} steps: "
                   f"{'OK' if worst <= variant.tolerance else 'DIFFERENT'} "
                   f"(tolerance {variant.tolerance:g})")
        print(f"{variant.name:<36} {speed:9.1f} {ratio:8.2f}x   {verdict}")


if __name__ == "__main__":
    main()
