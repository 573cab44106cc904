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
    j = config.judge
    assert (j.backend, j.model, j.template) == ("ollama", "llama3", "book")
    assert j.options == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    # The book fine-tunes its output head apart from the token embedding (a copy at load).
    assert config.model.tie_weights == "false"
    # Otherwise the file only spells out the defaults: loading nothing gives the same run.
    assert config == load_config(None, ["model.tie_weights=false"])


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
    ("judge.backend=vllm", "judge.backend: expected one of 'ollama', 'openai', 'llamacpp', got"),
    ("finetune.batch_size=0", "finetune.batch_size: must be at least 1"),
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


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = load_config(None, ["finetune.epochs=5", "model.bases=['gpt2']"])
    path = write(tmp_path, config.to_toml())
    assert load_config(path) == config
    assert load_config(path) != RunConfig()


def test_a_negative_bootstrap_seed_is_refused():
    with pytest.raises(ConfigError, match=r"^aggregate.seed: must be 0 or more, got -1$"):
        load_config(None, ["aggregate.seed=-1"])
