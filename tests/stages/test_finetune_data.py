"""The book's batching, checked on exact tensors."""

import torch

from evalpipe.stages.finetune import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_examples,
    epoch_order,
)

PAD = 50256


def test_collate_pads_shifts_and_ignores_all_padding_but_the_first():
    inputs, targets = collate([Example([0, 1, 2, 3, 4], 2), Example([5, 6], 1),
                               Example([7, 8, 9], 1)])
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD],
                                [6, PAD, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                                [8, 9, PAD, IGNORE_INDEX, IGNORE_INDEX]]


def test_collate_truncates_and_masks_the_instruction():
    inputs, targets = collate([Example([0, 1, 2, 3, 4], 3), Example([5, 6], 1)],
                              max_length=3, mask_instruction=True)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, PAD]]
    # Prompt of 3 tokens: the targets predicting tokens 1 and 2 (still prompt) are masked.
    assert targets.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 3], [6, PAD, IGNORE_INDEX]]
    assert inputs.dtype == targets.dtype == torch.int64


def test_training_examples_use_the_template(gpt2_tokenizer):
    record = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    (example,) = encode_examples([record], "alpaca")
    text = gpt2_tokenizer.decode(example.tokens)
    assert text.endswith("### Instruction:\nSay hi.\n\n### Response:\nHi.")
    assert gpt2_tokenizer.decode(example.tokens[:example.prompt_length]).endswith("Say hi.")


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(10, 123, 0) == epoch_order(10, 123, 0)
    assert sorted(epoch_order(10, 123, 1)) == list(range(10))
    assert epoch_order(10, 123, 0) != epoch_order(10, 123, 1)
