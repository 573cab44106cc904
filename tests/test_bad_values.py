"""Every bad value ends in one line, through the real command line: exit code 1, a single
`evalpipe: error: ...` line on stderr naming the key or the file, and no traceback.

Each case is one `python -m evalpipe` subprocess, run as a user runs it, in a working folder
with its own results/ and datasets/ (as tests/conftest.py's run_env). Configuration errors come
when the config is loaded, before any stage runs; the cases that need files of a run (a
progress file, a base model's config.json) share one run, prepared once, and generate with
random weights or a tiny model, so that no case waits on long work before its error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs/smoke.toml"
PARTIAL = Path("results/smoke/generate/responses.partial.jsonl")
BASE = Path("tiny-gpt2")  # a base model folder: model.safetensors + config.json
GOOD_HF_CONFIG = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 8,
                  "n_layer": 1, "n_head": 2, "n_positions": 16, "vocab_size": 64}


def evalpipe(folder: Path, stage: str, *settings: str,
             force: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVALPIPE_RESULTS": str(folder / "results"),
           "EVALPIPE_DATASETS": str(folder / "datasets")}
    env.pop("EVALPIPE_DEBUG", None)  # it prints the traceback on purpose
    command = [sys.executable, "-m", "evalpipe", stage, "--config", str(SMOKE)]
    command += ["--force"] if force else []
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, instruction_data, gpt2_tokenizer):
    """A working folder whose run `smoke` is prepared, and a tiny base model beside it."""
    import torch
    from safetensors.torch import save_file

    from evalpipe.gpt2.model import GPTConfig, GPTModel

    folder = tmp_path_factory.mktemp("bad-values")
    source = f"data.source={json.dumps(str(instruction_data))}"
    done = evalpipe(folder, "prepare", source)
    assert done.returncode == 0, done.stderr
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=8, n_heads=2,
                               n_layers=1))
    (folder / BASE).mkdir()
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()
             if name != "out_head.weight"}  # tied, as GPT-2's head
    save_file(state, str(folder / BASE / "model.safetensors"))
    return folder, source


def write_partial(content: bytes):
    def write(folder: Path) -> None:
        (folder / PARTIAL).parent.mkdir(parents=True, exist_ok=True)
        (folder / PARTIAL).write_bytes(content)
    return write


def write_base_config(**changes):
    """config.json of the tiny base model: GOOD_HF_CONFIG with `changes` (None drops a key)."""
    def write(folder: Path) -> None:
        values = {**GOOD_HF_CONFIG, **changes}
        values = {key: value for key, value in values.items() if value is not None}
        (folder / BASE / "config.json").write_text(json.dumps(values))
    return write


GENERATE_WITH_RANDOM_WEIGHTS = ("generate.model=base",)
GENERATE_WITH_TINY_BASE = (f"generate.model={BASE}",)

# (stage, settings, a file to write first or None, what the error line must name)
CASES = {
    # Configuration values: refused when the config is loaded. judge.* and aggregate.* are
    # tried with prepare, which would otherwise be the first stage to run.
    "negative learning rate": ("finetune", ["finetune.lr=-1"], None, "finetune.lr"),
    "learning rate nan": ("finetune", ["finetune.lr=nan"], None, "finetune.lr"),
    "negative max_steps": ("finetune", ["finetune.max_steps=-1"], None, "finetune.max_steps"),
    "negative max_length": ("finetune", ["finetune.max_length=-3"], None, "finetune.max_length"),
    "negative top_k": ("generate", ["generate.top_k=-1"], None, "generate.top_k"),
    "negative max_new_tokens": ("generate", ["generate.max_new_tokens=-5"], None,
                                "generate.max_new_tokens"),
    "negative temperature": ("generate", ["generate.temperature=-2"], None,
                             "generate.temperature"),
    "drop rate above 1": ("finetune", ["model.drop_rate=2"], None, "model.drop_rate"),
    "negative retries": ("prepare", ["judge.retries=-1"], None, "judge.retries"),
    "zero timeout": ("prepare", ["judge.timeout=0"], None, "judge.timeout"),
    "unknown pairwise pairs": ("prepare", ["judge.pairs='some'"], None,
                               "judge.pairs: expected one of 'all', 'anchor', got 'some'"),
    "pairs by anchor without one": ("prepare", ["judge.mode='pairwise'", "judge.pairs='anchor'"],
                                    None, "judge.anchor: judge.pairs = 'anchor' needs"),
    "expected scores of pairwise verdicts": (
        "prepare", ["judge.mode='pairwise'", "judge.scoring='expected'"], None,
        "judge.scoring: 'expected' works with judge.mode = 'single' only (a pairwise reply"),
    "one bootstrap resample": ("prepare", ["aggregate.bootstrap_resamples=1"], None,
                               "aggregate.bootstrap_resamples"),
    "heads that do not divide the width": ("finetune", ["model.n_heads=5"], None,
                                           "model.n_heads"),
    "heads that do not divide random weights' width": (
        "generate", [*GENERATE_WITH_RANDOM_WEIGHTS, "model.emb_dim=0", "model.n_heads=5"], None,
        "model.n_heads: 5 does not divide the width 768"),
    "a vocabulary smaller than the tokenizer's": ("finetune", ["model.vocab_size=100"], None,
                                                  "model.vocab_size"),
    "unknown model device": ("finetune", ["model.device=gpu9"], None, "model.device"),
    "unknown finetune device": ("finetune", ["finetune.device=tpu"], None, "finetune.device"),
    "unknown generate device": ("generate", ["generate.device=xyz"], None, "generate.device"),
    "unknown generate dtype": ("generate", ["generate.dtype=float16"], None, "generate.dtype"),
    "generate batch size 0": ("generate", ["generate.batch_size=0"], None, "generate.batch_size"),
    "generate batch size a word": ("generate", ["generate.batch_size=many"], None,
                                   "generate.batch_size"),
    # data.source: a malformed URL is named, never taken for a path or sent to httpx.
    "URL with a misspelt scheme": ("prepare", ["data.source=htp://x"], None,
                                   "data.source: 'htp://x' is not a valid URL"),
    "URL without a host": ("prepare", ["data.source=https://"], None,
                           "data.source: 'https://' is not a valid URL"),
    "URL with a space in the host": (
        "prepare", ["data.source=http://exa mple.com/a.json"], None,
        "data.source: 'http://exa mple.com/a.json' is not a valid URL"),
    # A progress file: only its last line can be cut by a kill; damage elsewhere is named.
    "torn UTF-8 before the last line": (
        "generate", [*GENERATE_WITH_RANDOM_WEIGHTS],
        write_partial('{"id": "a", "response": "caf'.encode() + b"\xc3\n" + b'{"id": "b"}\n'),
        "responses.partial.jsonl: line 1: not UTF-8 text"),
    "broken JSON before the last line": (
        "generate", [*GENERATE_WITH_RANDOM_WEIGHTS],
        write_partial(b'{"id": "a"}\n{"id": \n{"id": "c"}\n'),
        "responses.partial.jsonl: line 2: not valid JSON"),
    "a line that is not an object": (
        "generate", [*GENERATE_WITH_RANDOM_WEIGHTS],
        write_partial(b'["a", "b"]\n{"id": "c"}\n'),
        "responses.partial.jsonl: line 1: expected a JSON object"),
    # A base model's config.json: another architecture, or values of the wrong type.
    "config.json of a llama": ("generate", [*GENERATE_WITH_TINY_BASE],
                               write_base_config(model_type="llama"),
                               "config.json: model_type 'llama'"),
    "config.json with llama architectures": (
        "generate", [*GENERATE_WITH_TINY_BASE],
        write_base_config(model_type=None, architectures=["LlamaForCausalLM"]),
        "config.json: architectures ['LlamaForCausalLM']"),
    "config.json with n_embd as text": ("generate", [*GENERATE_WITH_TINY_BASE],
                                        write_base_config(n_embd="768"),
                                        "config.json: n_embd: expected"),
    "config.json with a fractional n_layer": ("generate", [*GENERATE_WITH_TINY_BASE],
                                              write_base_config(n_layer=12.5),
                                              "config.json: n_layer: expected"),
    "config.json without n_head": ("generate", [*GENERATE_WITH_TINY_BASE],
                                   write_base_config(n_head=None), "config.json: n_head"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_value_is_one_line_naming_it(prepared, case):
    folder, source = prepared
    stage, settings, write_first, named = CASES[case]
    if write_first is not None:
        write_first(folder)
    # --force: a generate that should have failed and did not must not leave the stage up
    # to date for the next case.
    result = evalpipe(folder, stage, source, *settings, force=stage == "generate")
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("evalpipe: error: "), result.stderr
    assert named in lines[0], result.stderr


@pytest.mark.parametrize("source, url", [
    ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/data.json", True),
    ("http://127.0.0.1:8080/data.json", True), ("http://[::1]:8000/data.json", True),
    ("https://bücher.example/daten.json", True), ("data.json", False),
    ("../shared/data/instruction-data.json", False), ("C:/data/instruction-data.json", False),
    ("http_mirror/data.json", False),
])
def test_sources_that_make_sense_are_kept(source, url):
    from evalpipe.stages.prepare import is_url

    assert is_url(source) is url


def test_a_gpu_that_is_not_there_is_one_line(prepared):
    """"cuda:1" is a valid name (config.py), so only the run finds the second GPU missing."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        pytest.skip("this machine has a second GPU")
    folder, source = prepared
    result = evalpipe(folder, "finetune", source, "finetune.device=cuda:1")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    expected = f"evalpipe: error: device 'cuda:1' asked for, but torch sees {count or 'no'} CUDA "
    assert (result.returncode, result.stderr.startswith(expected)) == (1, True), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_generate_goes_on_past_a_line_torn_mid_character(prepared):
    """A kill inside a multi-byte character leaves a last line that is not even UTF-8: it is
    the line being written, dropped like any cut line, and the stage runs to the end."""
    folder, source = prepared
    torn = '{"id": "a", "response": "☕'.encode()[:-1]
    write_partial(torn)(folder)
    result = evalpipe(folder, "generate", source, *GENERATE_WITH_RANDOM_WEIGHTS, force=True)
    assert result.returncode == 0, result.stderr
    responses = (folder / "results/smoke/generate/responses.jsonl").read_text().splitlines()
    assert len(responses) == 110
    assert not (folder / PARTIAL).exists()
