"""Run configuration: one dataclass per concern, loaded from a TOML file, overridable with --set.

A run is described completely by one TOML file with the sections below. Every key has a default,
so a file only names what differs from the book's chapter 7 run. Unknown sections or keys and
values of the wrong type are errors that name the key and the type expected, because a typo that
silently falls back to a default would make two runs look comparable when they are not.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from evalpipe.errors import EvalpipeError

BOOK_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
    "ch07/01_main-chapter-code/instruction-data.json"
)


class ConfigError(EvalpipeError):
    """A configuration file or override that cannot be used; the message names the key."""


@dataclass
class DataConfig:
    source: str = BOOK_DATA_URL  # URL or local path (JSON list or JSONL)
    sha256: str = ""  # expected SHA-256 of the source file; empty = not checked
    split: str = "book"  # "book": file order; "shuffle": seeded shuffle first
    seed: int = 123  # only used by split = "shuffle"
    train_fraction: float = 0.85
    test_fraction: float = 0.10  # the rest is validation
    template: str = "alpaca"  # "alpaca" or "phi3"


@dataclass
class ModelConfig:
    base: str = "gpt2-medium"  # preset, "hf:OWNER/REPO", or a local path
    revision: str = ""  # Hub models: the branch, tag or commit to load; "" = main
    bases: list[str] = field(default_factory=list)  # several base models to compare
    # Shape overrides for checkpoints that carry no config of their own (0 / "" = not set).
    emb_dim: int = 0
    n_layers: int = 0
    n_heads: int = 0
    context_length: int = 0
    vocab_size: int = 0
    qkv_bias: str = ""  # "true" / "false" / "" (from the checkpoint)
    tie_weights: str = ""  # "true" / "false" / "" (from the checkpoint)
    drop_rate: float = 0.0
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"

    def shape_overrides(self) -> dict[str, Any]:
        """The shape keys the user set, in GPTConfig's names."""
        overrides: dict[str, Any] = {}
        for key in ("emb_dim", "n_layers", "n_heads", "context_length", "vocab_size"):
            if getattr(self, key):
                overrides[key] = getattr(self, key)
        for key in ("qkv_bias", "tie_weights"):
            value = getattr(self, key)
            if value:
                overrides[key] = value == "true"
        return overrides


@dataclass
class FinetuneConfig:
    epochs: int = 2
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.1
    seed: int = 123
    seeds: list[int] = field(default_factory=list)  # one sub-run per seed; empty = just seed
    max_length: int = 0  # truncate training sequences to this many tokens; 0 = context length
    mask_instruction: bool = False  # exclude instruction/input tokens from the loss (ex. 7.2)
    eval_interval: int = 5  # steps between validation-loss evaluations; 0 = per epoch only
    early_stopping: int = 0  # patience in evaluations without improvement; 0 = off
    checkpoint_interval: int = 50  # steps between resumable checkpoints; 0 = per epoch only
    max_steps: int = 0  # stop after this many optimizer steps; 0 = no limit
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    # "auto": bfloat16 where the device computes in bf16 (CUDA from Ampere, a CPU with AVX-512
    # BF16 or AMX), float32 elsewhere; "float32"; "bfloat16" (autocast, weights stay float32)
    dtype: str = "auto"
    num_threads: int = 0  # torch threads on CPU; 0 = torch's default


@dataclass
class GenerateConfig:
    model: str = "finetuned"  # "finetuned"; "base" (model.base) or a base-model spec: no fine-tune
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy, as in the book
    top_k: int = 0  # 0 = no top-k filtering
    seed: int = 123
    # Prompts per batch; "auto" = what suits the device and the memory (see
    # evalpipe.gpt2.generation.auto_batch_size).
    batch_size: int | str = "auto"
    device: str = "auto"
    dtype: str = "float32"  # "float32" or "bfloat16" (weights and activations; changes outputs)
    # Importing responses made elsewhere instead of generating them.
    from_file: str = ""
    response_key: str = "model_response"
    allow_partial: bool = False


@dataclass
class JudgeConfig:
    backend: str = "ollama"  # "ollama", "openai", "llamacpp", "mock" (a test double)
    model: str = "llama3"  # model name; for llamacpp the GGUF file's path
    host: str = ""  # server URL; empty = OLLAMA_HOST / OPENAI_BASE_URL / the backend's default
    hosts: list[str] = field(default_factory=list)  # several servers of one backend
    api_key: str = ""  # openai backend; empty = OPENAI_API_KEY
    template: str = "book"  # "book" (0-100) or "rubric" (1-5, mapped to 0-100)
    structured: bool = False  # ask for JSON {score, reason} with a schema
    options: dict[str, Any] = field(
        default_factory=lambda: {"seed": 123, "temperature": 0, "num_ctx": 2048}
    )
    timeout: float = 120.0  # seconds per request
    retries: int = 3
    concurrency: int = 4
    repeats: int = 1  # ask k times with seeds seed, seed+1, ...
    # "integer": the score the reply writes (the book's); "expected": the mean of the score
    # values weighted by the judge's probabilities for them (docs/judge.md, "Expected scores")
    scoring: str = "integer"
    canaries: bool = True
    strict_canaries: bool = False  # a judge that fails its canaries is an error, not a warning
    # "single", "together" (all models' responses in one prompt) or "pairwise" (two at a time,
    # both orders, Bradley-Terry ratings; docs/compare.md)
    mode: str = "single"
    swap: bool = False  # together mode: judge again in reversed order
    pairs: str = "all"  # pairwise mode: "all" pairs of models, or each against judge.anchor
    anchor: str = ""  # pairwise mode: the run rated 1000 (required with pairs = "anchor")
    cache: str = ""  # judgment cache (SQLite); empty = judge-cache.sqlite in the results folder
    pull: bool = True  # ollama: pull a judge model the server lacks (false: stop and say so)


@dataclass
class AggregateConfig:
    bootstrap_resamples: int = 2000
    seed: int = 123
    confidence: float = 0.95


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The configuration as written to results/<run>/config.toml: without secrets."""
        return tomli_w.dumps(without_secrets(self.to_dict()))


# -- what may be written or printed ---------------------------------------------------------------

# The user:password@ part of a URL; the password runs to the last "@" before the path.
_URL_PASSWORD = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/?#@:]*:)[^/?#]*@")


def mask_url_password(url: str) -> str:
    """`url` with the password of a user:password@ part shown as ***, for anything written
    or printed (http://me:pw@host/v1 -> http://me:***@host/v1); other URLs unchanged."""
    return _URL_PASSWORD.sub(r"\1***@", url, count=1)


def without_secrets(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A configuration's values (RunConfig.to_dict) as they may be written to results/:
    judge.api_key emptied (empty means OPENAI_API_KEY, which is where a key belongs) and the
    hosts' passwords masked. No stage key holds either: where the judge runs and how it logs
    in does not change its answers."""
    judge = dict(values["judge"])
    judge["api_key"] = ""
    judge["host"] = mask_url_password(judge["host"])
    judge["hosts"] = [mask_url_password(host) for host in judge["hosts"]]
    return {**values, "judge": judge}


SECTIONS: dict[str, type] = typing.get_type_hints(RunConfig)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            tp.__name__, tp.__name__
        )
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return str(tp)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return value if it fits tp (ints are accepted for floats), else raise ConfigError."""
    origin = typing.get_origin(tp)
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is list:
        (item_type,) = typing.get_args(tp)
        ok = isinstance(value, list)
        if ok:
            value = [_check_type(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, dict)
    elif isinstance(tp, types.UnionType):
        ok = any(_fits(value, t) for t in typing.get_args(tp))
    else:  # pragma: no cover - a dataclass field of a type this loader does not know
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    if not ok:
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _fits(value: Any, tp: Any) -> bool:
    try:
        _check_type("", value, tp)
        return True
    except ConfigError:
        return False


def _apply(config: RunConfig, values: dict[str, Any], origin: str) -> None:
    for section_name, section_values in values.items():
        if section_name not in SECTIONS:
            raise ConfigError(
                f"{origin}: unknown section [{section_name}] "
                f"(known: {', '.join(SECTIONS)})"
            )
        if not isinstance(section_values, dict):
            raise ConfigError(f"{origin}: [{section_name}] must be a table")
        section = getattr(config, section_name)
        hints = typing.get_type_hints(type(section))
        for key, value in section_values.items():
            if key not in hints:
                raise ConfigError(
                    f"{origin}: unknown key {section_name}.{key} "
                    f"(known: {', '.join(hints)})"
                )
            try:
                value = _check_type(f"{section_name}.{key}", value, hints[key])
            except ConfigError as err:
                raise ConfigError(f"{origin}: {err}") from None
            setattr(section, key, value)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse 'section.key=value'. The value is read as TOML (numbers, booleans, lists,
    quoted strings); a value that is not TOML, such as a bare path, is taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    section_type = SECTIONS.get(section)
    field_type = typing.get_type_hints(section_type).get(key) if section_type else None
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    if field_type is str and not isinstance(value, str):
        value = raw  # model.base=123 or a path that happens to parse as a number
    return section, key, value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML config (None = all defaults) and apply --set overrides on top."""
    config = RunConfig()
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        _apply(config, values, str(path))
        try:  # the file alone first, so that an error in it names the file
            validate(config)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        _apply(config, {section: {key: value}}, "--set")
    validate(config)
    return config


CHOICES = {
    ("data", "split"): ("book", "shuffle"),
    ("data", "template"): ("alpaca", "phi3"),
    ("finetune", "dtype"): ("auto", "float32", "bfloat16"),
    ("generate", "dtype"): ("float32", "bfloat16"),
    # The names of evalpipe.judging.backends.BACKENDS (listed here: config imports no backend).
    ("judge", "backend"): ("ollama", "openai", "llamacpp", "mock"),
    ("judge", "template"): ("book", "rubric"),
    ("judge", "mode"): ("single", "together", "pairwise"),
    ("judge", "pairs"): ("all", "anchor"),
    ("judge", "scoring"): ("integer", "expected"),
    ("model", "qkv_bias"): ("", "true", "false"),
    ("model", "tie_weights"): ("", "true", "false"),
}


# The range of every numeric key: (test, what it must do). 0 means "off" or "not set" where
# the key's comment says so; seeds are 0 or more because numpy's generators take no negative
# seed. tests/test_config.py checks that no int or float key of a section is missing here.
AT_LEAST_0 = (lambda value: value >= 0, "be 0 or more")
AT_LEAST_1 = (lambda value: value >= 1, "be at least 1")
ABOVE_0 = (lambda value: value > 0, "be more than 0")
FRACTION = (lambda value: 0 < value < 1, "lie between 0 and 1, exclusive")
RANGES = {
    ("data", "seed"): AT_LEAST_0,
    ("data", "train_fraction"): FRACTION,
    ("data", "test_fraction"): FRACTION,
    ("model", "emb_dim"): AT_LEAST_0,  # the shape keys: 0 = not set (see ModelConfig)
    ("model", "n_layers"): AT_LEAST_0,
    ("model", "n_heads"): AT_LEAST_0,
    ("model", "context_length"): AT_LEAST_0,
    # Every run tokenizes with GPT-2's tokenizer: a smaller vocabulary cannot embed its ids.
    ("model", "vocab_size"): (lambda value: value == 0 or value >= 50257,
                              "be 0 or at least 50257 (the GPT-2 tokenizer's vocabulary)"),
    ("model", "drop_rate"): (lambda value: 0 <= value < 1, "be 0 or more and less than 1"),
    ("finetune", "epochs"): AT_LEAST_1,
    ("finetune", "batch_size"): AT_LEAST_1,
    ("finetune", "lr"): ABOVE_0,
    ("finetune", "weight_decay"): AT_LEAST_0,
    ("finetune", "seed"): AT_LEAST_0,
    ("finetune", "max_length"): AT_LEAST_0,
    ("finetune", "eval_interval"): AT_LEAST_0,
    ("finetune", "early_stopping"): AT_LEAST_0,
    ("finetune", "checkpoint_interval"): AT_LEAST_0,
    ("finetune", "max_steps"): AT_LEAST_0,
    ("finetune", "num_threads"): AT_LEAST_0,
    # 0 new tokens would make every response empty: a run that scores 0 without a word.
    ("generate", "max_new_tokens"): AT_LEAST_1,
    ("generate", "temperature"): AT_LEAST_0,
    ("generate", "top_k"): AT_LEAST_0,
    ("generate", "seed"): AT_LEAST_0,
    ("generate", "batch_size"): (lambda value: value == "auto" or (isinstance(value, int)
                                                                  and value >= 1),
                                 "be \"auto\" or a whole number, at least 1"),
    ("judge", "timeout"): ABOVE_0,
    ("judge", "retries"): AT_LEAST_0,
    ("judge", "concurrency"): AT_LEAST_1,
    ("judge", "repeats"): AT_LEAST_1,
    # Fewer resamples leave the interval's ends to a handful of draws: noise, not an interval.
    ("aggregate", "bootstrap_resamples"): (lambda value: value >= 100, "be at least 100"),
    ("aggregate", "seed"): AT_LEAST_0,
    ("aggregate", "confidence"): (lambda value: 0 < value < 1,
                                  "lie between 0 and 1 (0.95 for a 95% interval)"),
}
DEVICE_KEYS = (("model", "device"), ("finetune", "device"), ("generate", "device"))
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # torch's names; "cuda:1" is the second GPU


def validate(config: RunConfig) -> None:
    """Checks that need more than a type: allowed words and the ranges above."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise ConfigError(
                f"{section}.{key}: expected one of {', '.join(repr(a) for a in allowed)}, "
                f"got {value!r}"
            )
    for (section, key), (fits, expected) in RANGES.items():
        value = getattr(getattr(config, section), key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{key}: must be a finite number, got {value}")
        if not fits(value):
            raise ConfigError(f"{section}.{key}: must {expected}, got {value}")
    data = config.data
    if data.train_fraction + data.test_fraction > 1:
        raise ConfigError("data.train_fraction + data.test_fraction must not exceed 1")
    if config.judge.scoring == "expected" and config.judge.mode == "together":
        raise ConfigError("judge.scoring: 'expected' works with judge.mode = 'single' only "
                          "(a together reply writes k scores in one JSON object)")
    judge = config.judge
    if judge.scoring == "expected" and judge.mode == "pairwise":
        raise ConfigError("judge.scoring: 'expected' works with judge.mode = 'single' only "
                          "(a pairwise reply is a verdict, not a score)")
    if judge.pairs == "anchor" and not judge.anchor:
        raise ConfigError("judge.anchor: judge.pairs = 'anchor' needs the run every model is "
                          "compared with (judge.anchor = \"RUN\")")
    model = config.model
    if model.emb_dim and model.n_heads and model.emb_dim % model.n_heads:
        raise ConfigError(f"model.n_heads: {model.n_heads} does not divide model.emb_dim "
                          f"{model.emb_dim}")
    seeds = config.finetune.seeds
    for seed in seeds:
        if seed < 0:  # numpy's generators take no negative seed
            raise ConfigError(f"finetune.seeds: each seed must be 0 or more, got {seed}")
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise ConfigError(f"finetune.seeds: {twice[0]} is listed twice")
    for section, key in DEVICE_KEYS:
        value = getattr(getattr(config, section), key)
        if not DEVICE.fullmatch(value):
            raise ConfigError(f"{section}.{key}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or "
                              f"'mps', got {value!r}")
