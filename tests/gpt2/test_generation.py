"""generate_batch against the book's loop (generate_naive), token for token."""

import copy

import pytest
import torch

from evalpipe.gpt2.generation import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    Generation,
    auto_batch_size,
    generate_batch,
    generate_naive,
    kv_cache_bytes,
    length_batches,
    next_tokens,
)
from evalpipe.gpt2.model import PRESETS, GPTConfig, GPTModel

CONTEXT = 32


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=97, context_length=CONTEXT, emb_dim=32, n_heads=4,
                               n_layers=2)).eval()
    with torch.no_grad():  # large weights: varied greedy output instead of one repeated token
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.5)
    return model


def random_prompts(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 97, (n,), generator=generator).tolist() for n in lengths]


def naive_all(model, prompts, **settings):
    return [generate_naive(model, prompt, **settings) for prompt in prompts]


def test_batched_greedy_equals_unbatched_and_the_books_loop(model):
    prompts = random_prompts([1, 4, 9, 17, 3])
    settings = dict(max_new_tokens=12, eos_id=None)
    batched = generate_batch(model, prompts, **settings)
    one_by_one = [generate_batch(model, [prompt], **settings)[0] for prompt in prompts]
    naive = naive_all(model, prompts, **settings)
    assert batched == one_by_one == naive
    assert all(g.stop_reason == "length" and len(g.tokens) == 12 for g in batched)
    assert len({tuple(g.tokens) for g in batched}) == 5  # the test model's outputs differ
    assert all(len(set(g.tokens)) > 3 for g in batched)


def test_eos_mid_batch_stops_only_that_sequence(model):
    prompts = random_prompts([2, 5, 8, 11, 6, 3], seed=2)
    free_run = naive_all(model, prompts, max_new_tokens=16, eos_id=None)
    # An eos id that some sequences produce after a few tokens and others never do.
    def first_index(tokens, token):
        return tokens.index(token) if token in tokens else None

    eos_id = next(token for token in range(97)
                  if len({first_index(g.tokens, token) for g in free_run}) >= 3
                  and first_index(free_run[0].tokens, token) is None
                  and all(first_index(g.tokens, token) != 0 for g in free_run))
    batched = generate_batch(model, prompts, max_new_tokens=16, eos_id=eos_id)
    assert batched == naive_all(model, prompts, max_new_tokens=16, eos_id=eos_id)
    for free, stopped in zip(free_run, batched):
        cut = first_index(free.tokens, eos_id)
        if cut is None:
            assert stopped == Generation(free.tokens, "length")
        else:  # the tokens before eos; eos itself is not included
            assert stopped == Generation(free.tokens[:cut], "eos")
    assert {g.stop_reason for g in batched} == {"eos", "length"}


def test_eos_as_the_very_first_token_gives_no_tokens(model):
    prompt = random_prompts([5])[0]
    first = generate_naive(model, prompt, max_new_tokens=3, eos_id=None).tokens[0]
    assert generate_batch(model, [prompt], max_new_tokens=3, eos_id=first) == [
        Generation([], "eos")]


def test_generation_past_the_context_crops_as_the_book_does(model):
    # 40 > 32: the prompt keeps its last 32 tokens; others outgrow the window while
    # generating, some only after the long ones have left the batch.
    prompts = random_prompts([40, 30, 12, 3], seed=3)
    settings = dict(max_new_tokens=25, eos_id=None)
    assert generate_batch(model, prompts, **settings) == naive_all(model, prompts, **settings)
    assert generate_batch(model, prompts[:1], **settings) == naive_all(
        model, [prompts[0][-CONTEXT:]], **settings)


def test_rows_leaving_the_batch_and_then_outgrowing_the_context(model):
    # The longest prompt stops after a few tokens, taking its padding columns out of the
    # cache; later the 16-token prompt outgrows the 32-token window and cropping takes over.
    prompts = random_prompts([20, 12, 16, 2], seed=5)
    free_run = naive_all(model, prompts, max_new_tokens=20, eos_id=None)
    eos_id = free_run[0].tokens[2]
    assert all(eos_id not in g.tokens for g in free_run[1:])
    expected = naive_all(model, prompts, max_new_tokens=20, eos_id=eos_id)
    assert [g.stop_reason for g in expected] == ["eos", "length", "length", "length"]
    assert generate_batch(model, prompts, max_new_tokens=20, eos_id=eos_id) == expected


def test_sampling_is_reproducible_under_a_seed(model):
    prompts = random_prompts([3, 8, 5], seed=5)

    def sample(seed, **settings):
        return generate_batch(model, prompts, max_new_tokens=10, eos_id=None, temperature=1.0,
                              generator=torch.Generator().manual_seed(seed), **settings)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert sample(7, top_k=5) == sample(7, top_k=5)
    greedy = generate_batch(model, prompts, max_new_tokens=10, eos_id=None)
    assert sample(7, top_k=1) == greedy  # only the best token is left to sample
    assert sample(7) != greedy
    naive_sampled = generate_naive(model, prompts[0], max_new_tokens=10, eos_id=None,
                                   temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert naive_sampled == generate_batch(
        model, prompts[:1], max_new_tokens=10, eos_id=None, temperature=1.0,
        generator=torch.Generator().manual_seed(7))[0]


def test_next_tokens_follows_the_books_rules():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0], [5.0, 0.0, 0.0, 0.0, 4.0]])
    assert next_tokens(logits).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([next_tokens(logits, temperature=2.0, top_k=2, generator=generator)
                           for _ in range(300)])
    assert set(samples[:, 0].tolist()) == {1, 2}  # only the top two, both drawn
    assert set(samples[:, 1].tolist()) == {0, 4}
    cold = torch.stack([next_tokens(logits, temperature=0.01, generator=generator)
                        for _ in range(50)])
    assert cold[:, 1].tolist() == [0] * 50  # a low temperature is nearly greedy


def test_edge_cases_and_bad_arguments(model):
    assert generate_batch(model, [], max_new_tokens=5) == []
    assert generate_batch(model, [[1, 2]], max_new_tokens=0) == [Generation([], "length")]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_batch(model, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompt 0 holds a token id outside 0\.\.96"):
        generate_batch(model, [[97]], max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate_naive(model, [1], max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be >= 1 or None"):
        generate_batch(model, [[1]], max_new_tokens=2, top_k=0)


def test_generation_runs_in_eval_mode_and_restores_training_mode():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2,
                               n_layers=1, drop_rate=0.5)).train()
    prompts = [[1, 2, 3], [4, 5]]
    first = generate_batch(model, prompts, max_new_tokens=6, eos_id=None)
    assert model.training
    assert first == generate_batch(model, prompts, max_new_tokens=6, eos_id=None)  # no dropout
    assert first[0] == generate_naive(model, prompts[0], max_new_tokens=6, eos_id=None)
    assert model.training


def test_the_kv_cache_holds_what_the_batch_can_reach(model, monkeypatch):
    sizes = []
    new_kv_cache = model.new_kv_cache

    def recording(batch_size, max_length=None):
        sizes.append(max_length)
        return new_kv_cache(batch_size, max_length)

    monkeypatch.setattr(model, "new_kv_cache", recording)
    prompts = random_prompts([3, 7, 5])
    short = generate_batch(model, prompts, max_new_tokens=6, eos_id=None)
    assert short == naive_all(model, prompts, max_new_tokens=6, eos_id=None)
    long = generate_batch(model, prompts, max_new_tokens=40, eos_id=None)  # past the context
    assert long == naive_all(model, prompts, max_new_tokens=40, eos_id=None)
    assert sizes == [7 + 6, CONTEXT]


def test_auto_batch_size_suits_the_device_and_leaves_memory_free():
    medium = PRESETS["gpt2-medium"]  # 24 layers x 1024: 196,608 bytes of fp32 cache a position
    assert kv_cache_bytes(medium, 356, torch.float32) == 2 * 24 * 1024 * 356 * 4
    assert kv_cache_bytes(medium, 356, torch.bfloat16) == 2 * 24 * 1024 * 356 * 2
    plenty = 64 * 2**30
    assert auto_batch_size("cpu", medium, 356, torch.float32, plenty) == CPU_BATCH_SIZE == 64
    assert auto_batch_size("cuda", medium, 356, torch.float32, plenty) == GPU_BATCH_SIZE == 128
    assert auto_batch_size("mps", medium, 356, torch.float32, plenty) == 128
    # 1 GB free: a quarter of it holds 3 of medium's fp32 caches of 356 positions (70 MB
    # each), 7 in bf16; the whole context (1024 positions, 201 MB) once.
    assert auto_batch_size("cpu", medium, 356, torch.float32, 2**30) == 3
    assert auto_batch_size("cpu", medium, 356, torch.bfloat16, 2**30) == 7
    assert auto_batch_size("cuda", medium, 1024, torch.float32, 2**30) == 1
    assert auto_batch_size("cpu", medium, 1024, torch.float32, 2**20) == 1  # never 0


def test_length_batches_group_similar_lengths_in_even_batches():
    lengths = [5, 3, 9, 3, 7, 1, 8]
    assert length_batches(lengths, 3) == [[5, 1, 3], [0, 4], [6, 2]]  # 3, 2, 2: not 3, 3, 1
    assert length_batches(lengths, 7) == [[5, 1, 3, 0, 4, 6, 2]]
    assert length_batches(lengths, 100) == [[5, 1, 3, 0, 4, 6, 2]]
    assert length_batches(lengths, 1) == [[5], [1], [3], [0], [4], [6], [2]]
    assert [len(batch) for batch in length_batches(list(range(110)), 32)] == [28, 28, 27, 27]
    assert length_batches([], 8) == []


def test_a_full_default_batch_of_mixed_lengths_equals_the_books_loop(model):
    # CPU_BATCH_SIZE prompts of 1 to 24 tokens, with an eos id that sequences produce at
    # different steps (some never): the batch shrinks step by step, down to the rows that
    # run to the end, and some of those outgrow the context.
    lengths = [1 + (7 * row) % 24 for row in range(CPU_BATCH_SIZE)]
    prompts = random_prompts(lengths, seed=11)
    free_run = naive_all(model, prompts, max_new_tokens=14, eos_id=None)
    stops = {}
    for eos_id in range(97):
        stops[eos_id] = [g.tokens.index(eos_id) if eos_id in g.tokens else None
                         for g in free_run]
    eos_id = max(stops, key=lambda token: len(set(stops[token])))
    assert len(set(stops[eos_id])) >= 6 and None in stops[eos_id]
    expected = naive_all(model, prompts, max_new_tokens=14, eos_id=eos_id)
    assert generate_batch(model, prompts, max_new_tokens=14, eos_id=eos_id) == expected
    assert {g.stop_reason for g in expected} == {"eos", "length"}


def test_a_bfloat16_model_picks_its_tokens_from_fp32_logits(model, monkeypatch):
    """bf16 logits keep 3 significant digits: softmax and sampling run on them in fp32."""
    from evalpipe.gpt2 import generation

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    dtypes = []

    def recording(logits, **settings):
        dtypes.append(logits.dtype)
        return next_tokens(logits, **settings)

    monkeypatch.setattr(generation, "next_tokens", recording)
    prompts = random_prompts([3, 9, 5], seed=4)
    sampled = generate_batch(bf16, prompts, max_new_tokens=8, eos_id=None, temperature=1.0,
                             generator=torch.Generator().manual_seed(3))
    assert all(len(g.tokens) == 8 for g in sampled)
    assert set(dtypes) == {torch.float32} and len(dtypes) == 8
    assert sampled == generate_batch(bf16, prompts, max_new_tokens=8, eos_id=None,
                                     temperature=1.0, generator=torch.Generator().manual_seed(3))
