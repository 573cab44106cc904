import dataclasses
from pathlib import Path

import pytest

from evalpipe.config import BOOK_DATA_URL, ConfigError, RunConfig, load_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_books_chapter_7_run():
    config = load_config(REPO / "configs/book.toml")
    assert config.data.source == BOOK_DATA_URL
    assert (config.data.split, config.data.template) == ("book", "alpaca")
    assert config.model.base == "gpt2-medium"
    f = config.finetune
    assert (f.batch_size, f.epochs, f.lr, f.weight_decay, f.seed) == (8, 2, 5e-5, 0.1, 123)
    assert (config.generate.temperature, config.generate.max_new_tokens) == (0.0, 256)
    assert (config.generate.batch_size, config.generate.dtype) == ("auto", "float32")
    j = config.judge
    assert (j.backend, j.model, j.template) == ("ollama", "llama3", "book")
    assert j.options == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    # The book fine-tunes its output head apart from the token embedding (a copy at load).
    assert config.model.tie_weights == "false"
    # The book computes in fp32; the default "auto" would take bf16 on a fast-bf16 device.
    assert config.finetune.dtype == "float32"
    # Otherwise the file only spells out the defaults: loading nothing gives the same run.
    assert config == load_config(None, ["model.tie_weights=false", "finetune.dtype=float32"])


def test_smoke_config_loads():
    config = load_config(REPO / "configs/smoke.toml")
    assert config.model.base == "random"
    assert config.model.shape_overrides() == {
        "emb_dim": 64, "n_layers": 2, "n_heads": 4, "context_length": 256}


def test_overrides_are_typed_from_toml_or_taken_as_strings(tmp_path):
    config = load_config(None, [
        "finetune.lr=0.001", "finetune.epochs=3", "finetune.mask_instruction=true",
        "model.base=/models/my gpt.pth", "model.bases=['gpt2', 'hf:me/mine']",
        "judge.options={seed = 7, temperature = 0}", "data.sha256=123",
        'judge.model="llama3:8b"',
    ])
    assert config.finetune.lr == 0.001 and config.finetune.epochs == 3
    assert config.finetune.mask_instruction is True
    assert config.model.base == "/models/my gpt.pth"
    assert config.model.bases == ["gpt2", "hf:me/mine"]
    assert config.judge.options == {"seed": 7, "temperature": 0}
    assert config.data.sha256 == "123"  # a string field keeps a number-looking value as text
    assert config.judge.model == "llama3:8b"


def test_an_int_is_accepted_for_a_float():
    assert load_config(None, ["finetune.lr=1"]).finetune.lr == 1.0


@pytest.mark.parametrize("override, message", [
    ("finetune.epochs=two", "--set: finetune.epochs: expected integer, got str 'two'"),
    ("finetune.epochs=2.5", "--set: finetune.epochs: expected integer, got float 2.5"),
    ("finetune.mask_instruction=1",
     "--set: finetune.mask_instruction: expected boolean, got int 1"),
    ("finetune.lr=true", "--set: finetune.lr: expected number, got bool True"),
    ("model.bases=3", "--set: model.bases: expected list of string, got int 3"),
    ("judge.options=3", "--set: judge.options: expected table, got int 3"),
    ("finetune.learning_rate=0.1", "--set: unknown key finetune.learning_rate (known: epochs,"),
    ("training.lr=0.1", "--set: unknown section [training] (known: data, model, finetune,"),
    ("lr=0.1", "--set 'lr=0.1': expected section.key=value"),
    ("data.split=random", "data.split: expected one of 'book', 'shuffle', got 'random'"),
    ("judge.backend=vllm", "judge.backend: expected one of 'ollama', 'openai', 'llamacpp', 'mock', got"),
    ("finetune.batch_size=0", "finetune.batch_size: must be at least 1"),
    ("finetune.lr=0", "finetune.lr: must be more than 0, got 0.0"),
    ("judge.timeout=inf", "judge.timeout: must be a finite number, got inf"),
    ("finetune.weight_decay=nan", "finetune.weight_decay: must be a finite number, got nan"),
    ("generate.max_new_tokens=0", "generate.max_new_tokens: must be at least 1, got 0"),
    ("model.drop_rate=1", "model.drop_rate: must be 0 or more and less than 1, got 1.0"),
    ("model.emb_dim=-64", "model.emb_dim: must be 0 or more, got -64"),
    ("model.vocab_size=100", "model.vocab_size: must be 0 or at least 50257 (the GPT-2 "
                             "tokenizer's vocabulary), got 100"),
    ("data.seed=-1", "data.seed: must be 0 or more, got -1"),
    ("data.test_fraction=0", "data.test_fraction: must lie between 0 and 1, exclusive, got 0.0"),
    ("aggregate.bootstrap_resamples=99", "aggregate.bootstrap_resamples: must be at least 100"),
    ("generate.device=cuda1", "generate.device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or "
                              "'mps', got 'cuda1'"),
])
def test_bad_overrides_name_the_key_and_the_expected_type(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message)


def test_bad_files_name_the_file_and_the_key(tmp_path):
    path = write(tmp_path, "[finetune]\nepochs = 'two'\n")
    with pytest.raises(ConfigError, match=r"run.toml: finetune.epochs: expected integer, got str"):
        load_config(path)
    path = write(tmp_path, "[finetune]\nepoch = 2\n")
    with pytest.raises(ConfigError, match=r"run.toml: unknown key finetune.epoch \(known:"):
        load_config(path)
    path = write(tmp_path, "[finetune\n")
    with pytest.raises(ConfigError, match=r"run.toml: not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")
    # A value out of range in the file: the file is named (a run's config.toml read by
    # compare is no command line of the user's).
    path = write(tmp_path, "[finetune]\nlr = -1\n")
    with pytest.raises(ConfigError, match=r"^\S*run.toml: finetune.lr: must be more than 0, "
                                          r"got -1.0$"):
        load_config(path)
    # A file that is fine with a bad --set: the key alone, as from any --set.
    with pytest.raises(ConfigError, match=r"^finetune.lr: must be more than 0, got -1.0$"):
        load_config(REPO / "configs/smoke.toml", ["finetune.lr=-1"])


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = load_config(None, ["finetune.epochs=5", "model.bases=['gpt2']"])
    path = write(tmp_path, config.to_toml())
    assert load_config(path) == config
    assert load_config(path) != RunConfig()


def test_a_negative_bootstrap_seed_is_refused():
    with pytest.raises(ConfigError, match=r"^aggregate.seed: must be 0 or more, got -1$"):
        load_config(None, ["aggregate.seed=-1"])


def test_heads_must_divide_the_width_when_both_are_set():
    with pytest.raises(ConfigError, match=r"^model.n_heads: 5 does not divide model.emb_dim 768$"):
        load_config(None, ["model.emb_dim=768", "model.n_heads=5"])


def test_every_numeric_key_has_a_range():
    from evalpipe.config import RANGES, SECTIONS

    numeric = {(section, field.name) for section, section_type in SECTIONS.items()
               for field in dataclasses.fields(section_type) if field.type in ("int", "float", "int | str")}
    assert numeric == set(RANGES)


def test_values_that_make_sense_are_kept():
    """The edges of the ranges: 0 where it means "off" or "not set", a GPU by index."""
    settings = ["finetune.eval_interval=0", "finetune.max_steps=0", "finetune.max_length=0",
                "finetune.early_stopping=0", "finetune.checkpoint_interval=0",
                "finetune.num_threads=0", "finetune.weight_decay=0", "generate.top_k=0",
                "generate.temperature=0", "generate.max_new_tokens=1", "judge.retries=0",
                "model.drop_rate=0.0", "model.n_heads=16", "model.emb_dim=1024",
                "model.vocab_size=50304", "aggregate.bootstrap_resamples=100",
                "aggregate.seed=0", "finetune.seed=0", "model.device=cuda:1", "finetune.device=cpu", "generate.device=mps"]
    config = load_config(None, settings)
    assert (config.generate.top_k, config.judge.retries, config.model.device) == (0, 0, "cuda:1")
