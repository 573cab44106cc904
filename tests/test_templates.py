from evalpipe.templates import END_OF_TEXT_ID, get_template

WITH_INPUT = {"instruction": "Rewrite the sentence using a simile.",
              "input": "The car is very fast.", "output": "The car is as fast as lightning."}
NO_INPUT = {"instruction": "Name the author of 'Pride and Prejudice'.", "input": "",
            "output": "Jane Austen."}


def test_alpaca_prompt_with_and_without_input():
    alpaca = get_template("alpaca")
    assert alpaca.prompt(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
        "\n\n### Input:\nThe car is very fast."
    )
    assert alpaca.prompt(NO_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName the author of 'Pride and Prejudice'."
    )
    assert alpaca.training_text(NO_INPUT) == alpaca.prompt(NO_INPUT) + (
        "\n\n### Response:\nJane Austen.")


def test_phi3_prompt_with_and_without_input():
    phi3 = get_template("phi3")
    assert phi3.prompt(WITH_INPUT) == (
        "<|user|>\nRewrite the sentence using a simile.\nThe car is very fast.")
    assert phi3.prompt(NO_INPUT) == "<|user|>\nName the author of 'Pride and Prejudice'."
    assert phi3.training_text(WITH_INPUT) == (
        "<|user|>\nRewrite the sentence using a simile.\nThe car is very fast."
        "\n<|assistant|>:\nThe car is as fast as lightning.")


def test_response_extraction_as_in_the_book():
    assert get_template("alpaca").extract_response(
        "\n\n### Response:\nThe car is as fast as a bullet.\n") == "The car is as fast as a bullet."
    assert get_template("phi3").extract_response("\n<|assistant|>:\n Jane Austen. ") == (
        "Jane Austen.")


def test_the_real_gpt2_tokenizer(gpt2_tokenizer):
    from evalpipe.templates import decode, encode

    assert encode("Hello, world!") == [15496, 11, 995, 0]
    assert encode("<|endoftext|>") == [END_OF_TEXT_ID]
    text = get_template("alpaca").training_text(WITH_INPUT)
    assert decode(encode(text)) == text
