"""GPTModel: the book's names and maths, the KV cache and left padding."""

import math

import pytest
import torch
import torch.nn.functional as F

from evalpipe.gpt2.model import PRESETS, GPTConfig, GPTModel, KVCache

TINY = GPTConfig(vocab_size=101, context_length=24, emb_dim=32, n_heads=4, n_layers=2)


def tiny_model(seed=0, **changes) -> GPTModel:
    torch.manual_seed(seed)
    config = GPTConfig(**{**TINY.to_dict(), **changes})
    model = GPTModel(config).eval()
    with torch.no_grad():  # larger weights than GPT-2's init (biases too), so all of it matters
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.3)
    return model


def book_forward(model: GPTModel, idx: torch.Tensor) -> torch.Tensor:
    """The book's chapter 4 forward pass, written out: explicit causal mask and softmax, its
    own LayerNorm (biased variance) and tanh GELU."""
    cfg = model.cfg

    def layer_norm(norm, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return norm.scale * (x - mean) / torch.sqrt(var + 1e-5) + norm.shift

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    b, t = idx.shape
    head_dim = cfg.emb_dim // cfg.n_heads
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(t))
    mask = torch.triu(torch.ones(t, t), diagonal=1).bool()
    for block in model.trf_blocks:
        shortcut = x
        h = layer_norm(block.norm1, x)
        att = block.att
        q, k, v = (w(h).view(b, t, cfg.n_heads, head_dim).transpose(1, 2)
                   for w in (att.W_query, att.W_key, att.W_value))
        scores = (q @ k.transpose(2, 3)).masked_fill(mask, -torch.inf)
        weights = torch.softmax(scores / head_dim ** 0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(b, t, cfg.emb_dim)
        x = shortcut + att.out_proj(context)
        ff = block.ff.layers
        x = x + ff[2](gelu(ff[0](layer_norm(block.norm2, x))))
    return model.out_head(layer_norm(model.final_norm, x))


def test_presets_have_gpt2_parameter_counts():
    counts = {}
    with torch.device("meta"):  # shapes only: no memory, no time
        for name, config in PRESETS.items():
            counts[name] = GPTModel(config).num_parameters()
    assert counts == {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                      "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    with torch.device("meta"):
        gpt2 = GPTModel(PRESETS["gpt2"])
    assert gpt2.num_parameters(count_position_embedding=False) == 124_439_808 - 1024 * 768
    for config in PRESETS.values():
        assert (config.vocab_size, config.context_length, config.qkv_bias, config.tie_weights) \
            == (50257, 1024, True, True)


def test_untied_head_is_a_separate_matrix_without_bias():
    tied, untied = tiny_model(), tiny_model(tie_weights=False)
    assert tied.out_head.weight is tied.tok_emb.weight
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert untied.out_head.bias is None
    assert untied.num_parameters() == tied.num_parameters() + 101 * 32


def test_config_round_trips_through_a_dict():
    config = GPTConfig(vocab_size=7, context_length=5, emb_dim=8, n_heads=2, n_layers=1,
                       drop_rate=0.1, qkv_bias=False, tie_weights=False)
    assert config.to_dict() == {"vocab_size": 7, "context_length": 5, "emb_dim": 8, "n_heads": 2,
                                "n_layers": 1, "drop_rate": 0.1, "qkv_bias": False,
                                "tie_weights": False}
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown GPTConfig keys: n_embd, n_head"):
        GPTConfig.from_dict({"n_embd": 8, "n_head": 2})


def test_state_dict_uses_the_books_names():
    names = set(tiny_model(qkv_bias=False, tie_weights=False).state_dict())
    for name in ("tok_emb.weight", "pos_emb.weight", "trf_blocks.1.norm1.scale",
                 "trf_blocks.1.norm1.shift", "trf_blocks.0.att.W_query.weight",
                 "trf_blocks.0.att.W_key.weight", "trf_blocks.0.att.W_value.weight",
                 "trf_blocks.0.att.out_proj.weight", "trf_blocks.0.att.out_proj.bias",
                 "trf_blocks.0.norm2.scale", "trf_blocks.0.ff.layers.0.weight",
                 "trf_blocks.0.ff.layers.2.bias", "final_norm.scale", "final_norm.shift",
                 "out_head.weight"):
        assert name in names
    assert "trf_blocks.0.att.W_query.bias" not in names  # qkv_bias=False
    assert len(names) == 5 + 2 * 13  # embeddings, final norm, head; 13 tensors per block
    assert "trf_blocks.0.att.W_query.bias" in tiny_model(qkv_bias=True).state_dict()


def test_logits_match_the_books_forward_pass():
    model = tiny_model()
    idx = torch.randint(0, 101, (3, 17))
    with torch.no_grad():
        assert torch.allclose(model(idx), book_forward(model, idx), atol=1e-5, rtol=0)


def test_left_padding_gives_the_logits_of_the_unpadded_sequence():
    model = tiny_model()
    short, long = torch.randint(0, 101, (1, 6)), torch.randint(0, 101, (1, 11))
    pad = torch.full((1, 5), 99)  # any id: the mask hides it
    batch = torch.cat([torch.cat([pad, short], dim=1), long])
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :5] = 0
    with torch.no_grad():
        logits = model(batch, attention_mask=mask)
        assert torch.allclose(logits[0, 5:], model(short)[0], atol=1e-5, rtol=0)
        assert torch.allclose(logits[1], model(long)[0], atol=1e-5, rtol=0)
        assert torch.isfinite(logits).all()  # padding rows too


def test_kv_cache_in_pieces_gives_the_full_forward_logits():
    model = tiny_model()
    idx = torch.randint(0, 101, (2, 15))
    cache = model.new_kv_cache(batch_size=2)
    with torch.no_grad():
        pieces = [model(idx[:, a:b], kv_cache=cache) for a, b in ((0, 7), (7, 8), (8, 12),
                                                                   (12, 13), (13, 15))]
        assert cache.length == 15
        assert torch.allclose(torch.cat(pieces, dim=1), model(idx), atol=1e-5, rtol=0)


def test_kv_cache_with_left_padding():
    model = tiny_model()
    seq_a, seq_b = torch.randint(0, 101, (1, 9)), torch.randint(0, 101, (1, 4))
    tokens = torch.cat([seq_a, torch.cat([torch.zeros(1, 5, dtype=torch.long), seq_b], 1)])
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :5] = 0
    cache = model.new_kv_cache(batch_size=2)
    with torch.no_grad():
        model(tokens[:, :6], kv_cache=cache, attention_mask=mask[:, :6])
        last = model(tokens[:, 6:], kv_cache=cache, attention_mask=mask)
        assert torch.allclose(last[0], model(seq_a)[0, 6:], atol=1e-5, rtol=0)
        assert torch.allclose(last[1], model(seq_b)[0, 1:], atol=1e-5, rtol=0)


def test_last_token_only_gives_the_last_row():
    model = tiny_model()
    idx = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        last = model(idx, last_token_only=True)
        assert last.shape == (2, 1, 101)
        assert torch.allclose(last[:, 0], model(idx)[:, -1], atol=1e-5, rtol=0)


def test_kv_cache_keep_drops_rows_and_leading_positions():
    model = tiny_model()
    cache = model.new_kv_cache(batch_size=3)
    with torch.no_grad():
        model(torch.randint(0, 101, (3, 5)), kv_cache=cache)
    before = cache.keys[1][2, :, 2:5].clone()
    cache.keep(torch.tensor([2]), first_position=2)
    assert (cache.batch_size, cache.length) == (1, 3)
    assert cache.keys[1].shape == (1, 4, 24, 8)  # still room for the whole context
    assert torch.equal(cache.keys[1][0, :, :3], before)


def test_too_long_inputs_and_bad_masks_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="25 tokens exceed the context length of 24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    cache = model.new_kv_cache(batch_size=1, max_length=8)
    model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="9 tokens exceed the KV cache length of 8"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\), expected \(1, 4\)"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="exceeds the model's context length of 24"):
        KVCache(model.cfg, batch_size=1, max_length=25)
    with pytest.raises(ValueError, match="emb_dim 30 is not divisible by n_heads 4"):
        GPTModel(GPTConfig(vocab_size=5, context_length=4, emb_dim=30, n_heads=4, n_layers=1))


def test_training_step_reduces_the_loss():
    model = tiny_model(drop_rate=0.1).train()
    idx = torch.randint(0, 101, (4, 12))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[2] < losses[0]
    assert model.out_head.weight is model.tok_emb.weight  # still tied after optimizer steps


def test_dropout_is_active_only_in_training_mode():
    model = tiny_model(drop_rate=0.5)
    idx = torch.randint(0, 101, (1, 8))
    with torch.no_grad():
        assert torch.equal(model.eval()(idx), model(idx))
        model.train()
        assert not torch.equal(model(idx), model(idx))
