"""Prompt formatting and the tokenizer: the one place every stage takes them from.

Training, generation and judging must all format an example the same way, or the model is
scored on prompts it was not trained on. The two templates are the book's:
- "alpaca" (chapter 7): the Alpaca preamble, `### Instruction:`, an `### Input:` section only
  when the input is not empty, then `### Response:`.
- "phi3" (exercise 7.1): `<|user|>` ... `<|assistant|>:`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from evalpipe.errors import EvalpipeError

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256


@dataclass(frozen=True)
class Template:
    name: str
    response_marker: str  # what separates the prompt from the response in training text

    def prompt(self, record: dict) -> str:
        """The instruction and input, as the model sees them before its response."""
        raise NotImplementedError

    def training_text(self, record: dict) -> str:
        """Prompt, marker and reference response: what the model is fine-tuned on
        (the end-of-text token is appended as a token id by the caller)."""
        return self.prompt(record) + self.response_marker + record["output"]

    def extract_response(self, generated: str) -> str:
        """The response from text generated after the prompt, as the book extracts it:
        the marker removed and surrounding whitespace stripped."""
        return generated.replace(self.response_marker.strip(), "").strip()


class AlpacaTemplate(Template):
    def prompt(self, record: dict) -> str:
        text = (
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
            f"\n\n### Instruction:\n{record['instruction']}"
        )
        if record["input"]:
            text += f"\n\n### Input:\n{record['input']}"
        return text


class Phi3Template(Template):
    def prompt(self, record: dict) -> str:
        text = f"<|user|>\n{record['instruction']}"
        if record["input"]:
            text += f"\n{record['input']}"
        return text


TEMPLATES: dict[str, Template] = {
    "alpaca": AlpacaTemplate("alpaca", "\n\n### Response:\n"),
    "phi3": Phi3Template("phi3", "\n<|assistant|>:\n"),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r} (known: {', '.join(TEMPLATES)})") from None


@functools.cache
def get_tokenizer():
    """tiktoken's GPT-2 encoding. Offline, point TIKTOKEN_CACHE_DIR at a folder holding the
    two BPE files named by the SHA-1 of their URLs (see README, 'Running offline')."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # tiktoken raises requests' or its own errors when offline
        raise EvalpipeError(
            f"cannot load the GPT-2 tokenizer (tiktoken 'gpt2': {type(err).__name__}); "
            "offline, set TIKTOKEN_CACHE_DIR to a folder with the GPT-2 BPE files "
            "(see README, 'Running offline')"
        ) from None


def encode(text: str) -> list[int]:
    return get_tokenizer().encode(text, allowed_special={END_OF_TEXT})


def decode(tokens: list[int]) -> str:
    return get_tokenizer().decode(tokens)
