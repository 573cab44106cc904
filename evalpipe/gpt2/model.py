"""GPT-2, as built in chapters 4 and 5 of Sebastian Raschka's "Build a Large Language Model
(from Scratch)", with two additions for fast generation: a key/value cache and an attention
mask for left-padded batches; and one for fast training: `logits_for`, which computes the
logits of chosen positions only, and each sequence only as far as they need, with no work
spent on padding (see `GPTModel._forward_selected`).

The module and parameter names are the book's (`tok_emb`, `trf_blocks.0.att.W_query`,
`trf_blocks.0.norm1.scale`, ...), so a state dict saved from the book's `GPTModel` loads by
name. The book's causal-mask buffer (`att.mask`) is gone: attention goes through PyTorch's
`scaled_dot_product_attention`, which applies the causal mask itself.

Shapes in comments: B batch, T new tokens in this call, S all tokens the keys cover (cached
plus new), D embedding size, H heads, hd head size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    tie_weights: bool = True  # the output head shares the token-embedding matrix (as GPT-2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**values)


# OpenAI's four GPT-2 sizes; the names are also their Hugging Face Hub repos
# (openai-community/<name>).
PRESETS = {
    "gpt2": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
}


class KVCache:
    """The keys and values of every layer for the tokens seen so far, so that each new token
    costs one token's work instead of a pass over the whole sequence.

    Preallocated to `max_length` positions; `length` says how many are filled. The model
    writes each layer's new keys and values with `append` and moves `length` on once every
    layer has written.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_length: int | None = None, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        self.max_length = max_length or config.context_length
        if self.max_length > config.context_length:
            raise ValueError(f"a KV cache of {self.max_length} positions exceeds the model's "
                             f"context length of {config.context_length}")
        head_dim = config.emb_dim // config.n_heads
        shape = (batch_size, config.n_heads, self.max_length, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype)
                       for _ in range(config.n_layers)]
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        """Store one layer's keys and values (B, H, T, hd) for the new tokens, and return that
        layer's keys and values for all tokens so far (B, H, S, hd)."""
        end = self.length + keys.shape[2]
        self.keys[layer][:, :, self.length:end] = keys
        self.values[layer][:, :, self.length:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep(self, rows: torch.Tensor, first_position: int = 0) -> None:
        """Keep only these batch rows, and only the positions from `first_position` on: how
        generation drops finished sequences and the padding that only they needed."""
        new_length = self.length - first_position
        for store in (self.keys, self.values):
            for layer, old in enumerate(store):
                new = old.new_empty((len(rows), *old.shape[1:]))
                new[:, :, :new_length] = old[rows, :, first_position:self.length]
                store[layer] = new
        self.length = new_length


class PackedBatch:
    """A batch (B, T) of which a prefix of each row is computed, the kept tokens packed one
    after another into (N, C), N the number of kept tokens.

    Everything in the model but attention works token by token, so it runs on the packed
    tokens and spends nothing on the rest (the padding of the book's right-padded training
    batches). Attention needs the (B, T) layout: `pad` scatters the packed tokens into it,
    zeros elsewhere, and `unpad` gathers them back. The zeros are harmless: kept tokens are a
    prefix of their row and attention is causal, so a kept query only sees kept keys.
    Attention run on each row apart would need no padding, but it is many small operations,
    each of which waits for every thread: slower on a CPU shared with other work.
    """

    def __init__(self, keep: torch.Tensor):
        self.batch_size, self.num_tokens = keep.shape
        self.index = keep.flatten().nonzero().squeeze(1)  # (N,) into the flattened (B * T)

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (N, C) -> (B, T, C)
        return _ScatterRows.apply(x, self.index, self.batch_size * self.num_tokens).view(
            self.batch_size, self.num_tokens, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (N, C)
        return _GatherRows.apply(x.reshape(self.batch_size * self.num_tokens, -1), self.index)


class _ScatterRows(torch.autograd.Function):
    """x (N, C) into rows `index` of a zero (R, C) tensor; the gradient is the gather back.
    (index_copy's own backward also computes a gradient for the zeros, which nobody needs.)"""

    @staticmethod
    def forward(ctx, x, index, num_rows):
        ctx.save_for_backward(index)
        return x.new_zeros(num_rows, x.shape[-1]).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


class _GatherRows(torch.autograd.Function):
    """Rows `index` of x (R, C); the gradient is the scatter back. (index_select's own
    backward is an accumulating index_add, slower, and not needed: the rows are distinct.)"""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.num_rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.num_rows, grad.shape[-1]).index_copy_(0, index, grad), None


class LayerNorm(nn.Module):
    """The book's LayerNorm: parameters named `scale` and `shift`, eps 1e-5, biased variance
    (which is what F.layer_norm computes)."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        # A module rather than a float, so that whoever sets dropout on every nn.Dropout of
        # the model reaches the attention weights too.
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, *, attn_mask=None, is_causal=False, kv_cache: KVCache | None = None,
                layer: int = 0, packed: PackedBatch | None = None):
        if packed is None:
            b, num_tokens, _ = x.shape
            to_batch = from_batch = lambda t: t
        else:  # x is (N, D), packed; attention itself runs on the (B, T) layout
            b, num_tokens = packed.batch_size, packed.num_tokens
            to_batch, from_batch = packed.pad, packed.unpad

        def split_heads(t):  # (B, T, D) -> (B, H, T, hd)
            return to_batch(t).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        queries = split_heads(self.W_query(x))
        keys = split_heads(self.W_key(x))
        values = split_heads(self.W_value(x))
        if kv_cache is not None:
            keys, values = kv_cache.append(layer, keys, values)

        dropout_p = self.dropout.p if self.training else 0.0
        if queries.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU autocast would attend in bf16, whose backward kernel is 2-3x slower than
            # fp32's (6% of a bf16 GPT-2 124M training step): attend in fp32, the more
            # precise anyway; the output projection casts back.
            with torch.autocast("cpu", enabled=False):
                context = F.scaled_dot_product_attention(
                    queries.float(), keys.float(), values.float(), attn_mask=attn_mask,
                    is_causal=is_causal, dropout_p=dropout_p)
        else:
            context = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=attn_mask, is_causal=is_causal,
                dropout_p=dropout_p)
        context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(from_batch(context))


class FeedForward(nn.Module):
    def __init__(self, emb_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, 4 * emb_dim),
            nn.GELU(approximate="tanh"),  # GPT-2's GELU, as the book's own GELU class
            nn.Linear(4 * emb_dim, emb_dim),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg.emb_dim, d_out=cfg.emb_dim, dropout=cfg.drop_rate,
                                      num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias)
        self.ff = FeedForward(cfg.emb_dim)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, *, attn_mask=None, is_causal=False, kv_cache: KVCache | None = None,
                layer: int = 0, packed: PackedBatch | None = None):
        x = x + self.drop_shortcut(self.att(self.norm1(x), attn_mask=attn_mask,
                                            is_causal=is_causal, kv_cache=kv_cache, layer=layer,
                                            packed=packed))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.emb_dim % cfg.n_heads:
            raise ValueError(f"emb_dim {cfg.emb_dim} is not divisible by n_heads {cfg.n_heads}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # GPT-2's initialisation (the book keeps PyTorch's defaults, which give a tied head
        # logits in the tens and a first loss far above ln(vocab_size)); only random-weight
        # models see this: loaded weights overwrite it.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_kv_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        """An empty cache on this model's device and dtype, for up to `max_length` tokens
        (default: the context length)."""
        weight = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, max_length, device=weight.device, dtype=weight.dtype)

    def forward(self, idx, *, kv_cache: KVCache | None = None, attention_mask=None,
                last_token_only: bool = False, logits_for: torch.Tensor | None = None):
        """Logits (B, T, vocab_size) for token ids `idx` (B, T).

        kv_cache: the keys and values of earlier tokens; `idx` continues them, and the cache
            is extended by `idx`.
        attention_mask: (B, S) with 1 for real tokens and 0 for padding, covering the cached
            tokens and `idx`. Padding must be on the left. Real tokens never attend to padding,
            and positions count from each sequence's first real token, so a left-padded
            sequence gets exactly the logits it would get alone.
        last_token_only: compute logits for the last position only (B, 1, vocab_size), which
            is all generation needs; it saves most of the vocabulary projection.
        logits_for: (B, T) booleans; return logits (N, vocab_size) for the N True positions
            only, in row-major order, e.g. those whose training target counts:
            `model(inputs, logits_for=targets != -100)` then `cross_entropy(logits,
            targets[targets != -100])` is the book's loss for less work (see
            `_forward_selected`). Not with a KV cache or an attention mask.
        """
        if logits_for is not None:
            if kv_cache is not None or attention_mask is not None or last_token_only:
                raise ValueError("logits_for does not combine with kv_cache, attention_mask "
                                 "or last_token_only")
            return self._forward_selected(idx, logits_for)
        batch_size, num_tokens = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        total = past + num_tokens
        limit = kv_cache.max_length if kv_cache is not None else self.cfg.context_length
        if total > limit:
            raise ValueError(f"{total} tokens exceed the {'KV cache' if kv_cache else 'context'}"
                             f" length of {limit}")
        if attention_mask is not None and tuple(attention_mask.shape) != (batch_size, total):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                             f"{(batch_size, total)} (batch size, cached + new tokens)")

        positions, attn_mask, is_causal = self._positions_and_mask(past, num_tokens,
                                                                   attention_mask, idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(positions))
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, attn_mask=attn_mask, is_causal=is_causal, kv_cache=kv_cache, layer=layer)
        if kv_cache is not None:
            kv_cache.length = total
        if last_token_only:
            x = x[:, -1:]
        return self.out_head(self.final_norm(x))

    def _forward_selected(self, idx, logits_for):
        """Logits of the selected positions, computing no more than they depend on.

        A causal model's output at a position depends on the tokens up to that position only,
        so each row is computed up to its last selected position and no further: in the
        book's right-padded batches, everything after an example's end-of-text target is
        left out. The kept prefixes are packed one after another into (N, D), N their total
        length (see `PackedBatch`). The final norm and the output head (for GPT-2
        124M a third of the work per token) run on the selected positions only. The results
        are those of the full computation up to float rounding (the same operations on the
        same numbers, in differently shaped matrix products).
        """
        if tuple(logits_for.shape) != tuple(idx.shape):
            raise ValueError(f"logits_for has shape {tuple(logits_for.shape)}, expected the "
                             f"shape of idx {tuple(idx.shape)}")
        if idx.shape[1] > self.cfg.context_length:
            raise ValueError(f"{idx.shape[1]} tokens exceed the context length of "
                             f"{self.cfg.context_length}")
        selected = logits_for.to(device=idx.device, dtype=torch.bool)
        positions = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
        row_lengths = torch.where(selected, positions + 1, 0).amax(dim=1, keepdim=True)
        keep = positions < row_lengths  # (B, T): a prefix of each row, row-major when packed

        # Columns past the longest kept prefix hold nothing kept: attention need not see them.
        kept_length = max(int(row_lengths.max()), 1)  # 1: an empty selection still runs
        idx, selected, positions, keep = (t[:, :kept_length] for t in
                                          (idx, selected, positions, keep))
        packed = PackedBatch(keep)

        x = self.drop_emb(self.tok_emb(idx[keep]) + self.pos_emb(positions[keep]))  # (N, D)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, is_causal=True, layer=layer, packed=packed)
        x = x[selected[keep]]  # the selected positions, in row-major order as in idx
        return self.out_head(self.final_norm(x))

    @staticmethod
    def _positions_and_mask(past: int, num_tokens: int, attention_mask, device):
        """Position ids for the new tokens, and how scaled_dot_product_attention masks: a
        boolean mask (True = may attend), or None with is_causal saying whether the plain
        causal mask applies."""
        total = past + num_tokens
        if attention_mask is None:
            positions = torch.arange(past, total, device=device)
            if past == 0:
                return positions, None, True
            if num_tokens == 1:
                return positions, None, False  # one new token sees everything before it
            # New tokens after cached ones: query i sits at slot past + i (is_causal would
            # align the mask to the top left, as if there were no cached tokens).
            key_slot = torch.arange(total, device=device)
            query_slot = torch.arange(past, total, device=device)
            return positions, (key_slot[None, :] <= query_slot[:, None])[None, None], False

        real = attention_mask.to(device=device, dtype=torch.bool)
        # A left-padded sequence starts at position 0 on its first real token.
        positions = (real.long().cumsum(dim=-1) - 1).clamp(min=0)[:, past:]
        key_slot = torch.arange(total, device=device)
        query_slot = torch.arange(past, total, device=device)
        causal = key_slot[None, :] <= query_slot[:, None]  # (T, S)
        # A padding query would see no key at all, and an all-masked row gives NaN; letting
        # it see itself keeps it finite. Real tokens never attend to padding.
        itself = key_slot[None, :] == query_slot[:, None]
        allowed = causal[None] & (real[:, None, :] | itself[None])  # (B, T, S)
        return positions, allowed[:, None], False  # (B, 1, T, S): the same for every head

    def num_parameters(self, *, count_position_embedding: bool = True) -> int:
        """Number of parameters, the tied head counted once (GPT-2 124M: 124,439,808)."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied one once
        if not count_position_embedding:
            total -= self.pos_emb.weight.numel()
        return total
