"""The fast training step equals the book's: logits only where the target counts, each row
computed only up to its last counted target (`GPTModel.forward(logits_for=...)`, used by
`finetune.batch_loss`), and the fused AdamW of `finetune.make_optimizer`.

The reference is the book's computation written out here: logits for every position and
`cross_entropy(logits.flatten(0, 1), targets.flatten())` with ignore_index -100, and
torch.optim.AdamW without options. Batches are the real instruction data through the real
collate, so they have the book's padding (and, with mask_instruction, a masked prompt).
"""

import json
import types

import pytest
import torch
import torch.nn.functional as F

from evalpipe.gpt2.model import GPTConfig, GPTModel
from evalpipe.stages.finetune import (
    IGNORE_INDEX,
    batch_loss,
    collate,
    encode_examples,
    make_optimizer,
)

CPU = torch.device("cpu")
TINY = GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=4, n_layers=2)


@pytest.fixture(scope="module")
def examples(instruction_data, gpt2_tokenizer):
    records = json.loads(instruction_data.read_text(encoding="utf-8"))
    return encode_examples(records[:24], "alpaca")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPTModel(TINY).train()


def book_loss(model, inputs, targets):
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


BATCHES = {  # name: collate options
    "padding": {},
    "mask_instruction": {"mask_instruction": True},
    # The first 8 examples have 44 to 74 tokens, prompts of 31 to 48.
    "truncated": {"max_length": 56},  # the longer ones cut before their end-of-text
    # the 48-token prompt fills its whole row: no counted target in that row at all
    "masked_and_truncated": {"mask_instruction": True, "max_length": 45},
}


@pytest.mark.parametrize("options", BATCHES.values(), ids=BATCHES.keys())
def test_fast_loss_and_gradients_equal_the_full_logits_cross_entropy(examples, options):
    inputs, targets = collate(examples[:8], **options)
    counted = targets != IGNORE_INDEX
    assert counted.any() and not counted.all()  # the batch really has ignored targets
    if "max_length" in options:
        assert inputs.shape[1] == options["max_length"]
    if options == BATCHES["masked_and_truncated"]:
        assert not counted[0].any()
    model = tiny_model()

    fast = batch_loss(model, inputs, targets, CPU)
    fast.backward()
    fast_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    plain = book_loss(model, inputs, targets)
    plain.backward()

    assert fast.item() == pytest.approx(plain.item(), abs=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fast_grads[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_rows_are_computed_only_up_to_their_last_counted_target(examples):
    inputs, targets = collate(examples[:8], mask_instruction=True)
    counted = targets != IGNORE_INDEX
    last_counted = [int(row.nonzero().max()) + 1 for row in counted]
    model = tiny_model().eval()
    seen = {}

    def record_input_shape(name):
        def hook(module, args, output):
            seen.setdefault(name, tuple(args[0].shape))  # the first call: logits_for's
        return hook

    model.trf_blocks[0].ff.register_forward_hook(record_input_shape("block"))
    model.out_head.register_forward_hook(record_input_shape("head"))

    with torch.no_grad():
        selected = model(inputs, logits_for=counted)
        full = model(inputs)

    # The blocks see the kept prefixes only, the output head the counted positions only.
    assert seen == {"block": (sum(last_counted), 32), "head": (int(counted.sum()), 32)}
    assert sum(last_counted) < inputs.numel()
    assert selected.shape == (int(counted.sum()), 50257)
    torch.testing.assert_close(selected, full[counted], rtol=1e-5, atol=1e-5)


def test_nothing_selected_gives_no_logits(examples):
    inputs, targets = collate(examples[:2])
    logits = tiny_model()(inputs, logits_for=torch.zeros_like(targets, dtype=torch.bool))
    assert logits.shape == (0, 50257)


def test_logits_for_refuses_what_it_does_not_support(examples):
    inputs, targets = collate(examples[:2])
    model = tiny_model()
    with pytest.raises(ValueError, match=r"logits_for has shape \(2, 3\), expected the shape "
                                         r"of idx \(2, \d+\)"):
        model(inputs, logits_for=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits_for does not combine with kv_cache"):
        model(inputs, logits_for=targets != IGNORE_INDEX, last_token_only=True)


@pytest.mark.parametrize("mask_instruction", [False, True])
def test_training_steps_end_with_the_same_weights(examples, mask_instruction):
    settings = types.SimpleNamespace(lr=1e-3, weight_decay=0.1)  # a large lr: visible steps
    batches = [collate(examples[start:start + 6], mask_instruction=mask_instruction)
               for start in range(0, 24, 6)]

    plain_model = tiny_model()
    plain_optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, weight_decay=0.1)
    fast_model = tiny_model()
    fast_optimizer = make_optimizer(fast_model, settings, CPU)
    assert fast_optimizer.param_groups[0]["fused"] is True
    initial = {name: p.detach().clone() for name, p in plain_model.named_parameters()}

    for inputs, targets in batches:
        for model, optimizer, loss_fn in [
                (plain_model, plain_optimizer, lambda m, x, y: book_loss(m, x, y)),
                (fast_model, fast_optimizer, lambda m, x, y: batch_loss(m, x, y, CPU))]:
            optimizer.zero_grad()
            loss_fn(model, inputs, targets).backward()
            optimizer.step()

    fast_weights = dict(fast_model.named_parameters())
    for name, p in plain_model.named_parameters():
        assert not torch.equal(p, initial[name]), name  # every parameter moved
        if name.endswith("W_key.bias"):
            # A key bias adds the same q.b to every score of a query, which softmax ignores:
            # its gradient is zero up to rounding, and AdamW's normalised step turns that
            # rounding into full-size steps either way, in both paths alike. It has no effect
            # on any output, so it is not compared.
            assert fast_model.get_parameter(name).grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(fast_weights[name], p, rtol=0, atol=1e-6, msg=name)


def test_bf16_autocast_loss_within_one_percent_of_fp32(examples):
    inputs, targets = collate(examples[:8])
    model = tiny_model()
    with torch.no_grad():
        fp32 = batch_loss(model, inputs, targets, CPU).item()
        bf16 = batch_loss(model, inputs, targets, CPU, torch.bfloat16).item()
    assert bf16 == pytest.approx(fp32, rel=1e-2)
    assert bf16 != fp32  # autocast did change the arithmetic


def test_dropout_applies_in_training_and_not_in_evaluation(examples):
    inputs, targets = collate(examples[:8])
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**{**TINY.to_dict(), "drop_rate": 0.3}))
    with torch.no_grad():
        model.eval()
        evaluation = batch_loss(model, inputs, targets, CPU).item()
        assert evaluation == pytest.approx(book_loss(model, inputs, targets).item(), abs=1e-6)
        model.train()
        training = [batch_loss(model, inputs, targets, CPU).item() for _ in range(2)]
    assert len({evaluation, *training}) == 3  # a different dropout mask each time
