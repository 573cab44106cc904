"""The generate stage: responses from a model (batched, resumable) and responses imported."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalpipe.cli import main
from evalpipe.gpt2.generation import generate_naive
from evalpipe.gpt2.weights import load_finetuned
from evalpipe.io import read_jsonl
from evalpipe.templates import END_OF_TEXT_ID, encode, get_template

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.toml"
TINY = ["finetune.max_steps=2", "finetune.eval_interval=0", "model.emb_dim=32",
        "model.context_length=192", "finetune.max_length=192", "generate.max_new_tokens=12"]
FIELDS = ["id", "instruction", "input", "output", "response", "prompt_tokens",
          "response_tokens", "stop_reason", "seconds"]


def cli(run: str, stage: str, settings: list[str], *extra: str) -> int:
    args = [stage, "--config", str(SMOKE), "--run", run, *extra]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_generated_responses_are_the_books_greedy_loop_in_test_order(
        run_env, instruction_data, gpt2_tokenizer):
    settings = [f"data.source={instruction_data}", *TINY]
    assert cli("gen", "generate", settings) == 0
    out = run_env / "results/gen"
    test = read_jsonl(out / "prepare/test.jsonl")
    responses = read_jsonl(out / "generate/responses.jsonl")
    assert [r["id"] for r in responses] == [r["id"] for r in test]  # every record, in order
    assert all(list(r) == FIELDS for r in responses)
    assert not (out / "generate/responses.partial.jsonl").exists()

    # The batched KV-cache path gives the book's one-prompt-at-a-time loop, token for token.
    model = load_finetuned(out / "finetune").model
    template = get_template("alpaca")
    for record in responses[:6]:
        prompt = encode(template.prompt(record))
        naive = generate_naive(model, prompt, max_new_tokens=12, eos_id=END_OF_TEXT_ID)
        assert record["prompt_tokens"] == len(prompt)
        assert record["response_tokens"] == len(naive.tokens)
        assert record["stop_reason"] == naive.stop_reason
        assert record["response"] == template.extract_response(
            gpt2_tokenizer.decode(naive.tokens))


def test_a_killed_generate_resumes_without_redoing_finished_records(
        run_env, instruction_data, gpt2_tokenizer):
    settings = [f"data.source={instruction_data}", *TINY, "generate.max_new_tokens=24",
                "generate.batch_size=8"]
    assert cli("killed", "finetune", settings) == 0
    assert cli("whole", "generate", settings) == 0

    args = [sys.executable, "-m", "evalpipe", "generate", "--config", str(SMOKE),
            "--run", "killed"]
    for setting in settings:
        args += ["--set", setting]
    partial = run_env / "results/killed/generate/responses.partial.jsonl"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if partial.exists() and len(partial.read_text().splitlines()) >= 16:
            break
        assert process.poll() is None, "generate finished before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = {r["id"]: r for r in read_jsonl(partial)}
    assert 16 <= len(finished_before) < 110
    assert not (run_env / "results/killed/generate/responses.jsonl").exists()

    assert cli("killed", "generate", settings) == 0
    responses = read_jsonl(run_env / "results/killed/generate/responses.jsonl")
    # Finished records were kept as they were (their timing too), not generated again.
    for record in responses:
        if record["id"] in finished_before:
            assert record["seconds"] == finished_before[record["id"]]["seconds"]
    whole = read_jsonl(run_env / "results/whole/generate/responses.jsonl")
    assert without_seconds(responses) == without_seconds(whole)


def test_importing_the_books_responses_matches_all_110(run_env, instruction_data,
                                                      book_responses, gpt2_tokenizer, capsys):
    assert cli("book", "generate", [f"data.source={instruction_data}"],
               "--from", str(book_responses)) == 0
    out = run_env / "results/book/generate"
    responses = read_jsonl(out / "responses.jsonl")
    book = json.loads(book_responses.read_text())
    test = read_jsonl(run_env / "results/book/prepare/test.jsonl")
    assert len(responses) == 110
    assert [r["id"] for r in responses] == [r["id"] for r in test]
    assert [r["response"] for r in responses] == [b["model_response"] for b in book]
    assert {r["stop_reason"] for r in responses} == {"imported"}
    assert responses[0]["response_tokens"] == len(gpt2_tokenizer.encode(book[0]["model_response"]))
    report = json.loads((out / "import-report.json").read_text())
    assert report["matched"] == 110
    assert "imported 110 of 110 responses" in capsys.readouterr().out
    # No model was needed, so nothing was fine-tuned.
    assert not (run_env / "results/book/finetune").exists()


def test_an_import_with_records_missing_fails_unless_partial_is_allowed(
        run_env, instruction_data, book_responses, gpt2_tokenizer, capsys):
    book = json.loads(book_responses.read_text())
    partial_file = run_env / "some.jsonl"
    partial_file.write_text("".join(json.dumps(r) + "\n" for r in book[:100]))
    settings = [f"data.source={instruction_data}"]
    capsys.readouterr()
    assert cli("some", "generate", settings, "--from", str(partial_file)) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"evalpipe: error: generate --from {partial_file}: 10 test records "
                            f"have no response in it (first: id ")
    assert "--allow-partial" in error and "\n" not in error
    assert not (run_env / "results/some/generate/responses.jsonl").exists()

    assert cli("some", "generate", settings, "--from", str(partial_file), "--allow-partial") == 0
    responses = read_jsonl(run_env / "results/some/generate/responses.jsonl")
    assert len(responses) == 110
    missing = [r for r in responses if r["stop_reason"] == "missing"]
    assert len(missing) == 10 and all(r["response"] is None for r in missing)


def test_a_response_key_that_is_not_there_is_named(run_env, instruction_data, book_responses,
                                                    gpt2_tokenizer, capsys):
    capsys.readouterr()
    assert cli("key", "generate", [f"data.source={instruction_data}"], "--from",
               str(book_responses), "--response-key", "answer") == 1
    error = capsys.readouterr().err
    assert "answer" in error and str(book_responses) in error


SHAPE = dict(emb_dim=64, n_layers=2, n_heads=4, context_length=256)  # smoke.toml's


@pytest.fixture
def checkpoint(run_env) -> Path:
    """A small random base model of smoke.toml's shape, saved as the book's state dict."""
    import torch

    from evalpipe.gpt2.model import GPTConfig, GPTModel

    path = run_env / "mine.pth"
    torch.manual_seed(0)
    torch.save(GPTModel(GPTConfig(**SHAPE)).state_dict(), path)
    (run_env / "mine.json").write_text(json.dumps(GPTConfig(**SHAPE).to_dict()))
    return path


def test_a_base_checkpoint_replaced_in_place_makes_generate_stale(
        run_env, instruction_data, gpt2_tokenizer, checkpoint, capsys):
    """generate.model = a local checkpoint: its files are inputs of the stage."""
    import torch

    from evalpipe.gpt2.model import GPTConfig, GPTModel

    shape = GPTConfig(**SHAPE)
    settings = [f"data.source={instruction_data}", f"generate.model={checkpoint}",
                "generate.max_new_tokens=4"]
    assert cli("mine", "generate", settings) == 0
    assert not (run_env / "results/mine/finetune").exists()  # a base model needs no fine-tune

    capsys.readouterr()
    assert cli("mine", "status", settings) == 0
    assert "generate   done" in capsys.readouterr().out
    torch.manual_seed(1)
    torch.save(GPTModel(shape).state_dict(), checkpoint)
    assert cli("mine", "status", settings) == 0
    assert f"generate   stale    input model/mine.pth ({checkpoint}) changed" in \
        capsys.readouterr().out


def test_greedy_generation_is_not_rerun_for_settings_that_cannot_change_it(
        run_env, instruction_data, gpt2_tokenizer, checkpoint, capsys):
    """Under greedy decoding (temperature 0) the seed, top-k and batch size change no
    response, so they are not in generate's config key; under sampling they are."""
    settings = [f"data.source={instruction_data}", f"generate.model={checkpoint}",
                "generate.max_new_tokens=4"]
    unused_when_greedy = ["generate.seed=9", "generate.top_k=5", "generate.batch_size=3"]

    def generate_status(*more: str) -> str:
        capsys.readouterr()
        assert cli("mine", "status", [*settings, *more]) == 0
        return next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("generate "))

    assert cli("mine", "generate", settings) == 0
    assert generate_status(*unused_when_greedy).split()[1] == "done"

    sampled = [*settings, "generate.temperature=0.7"]
    assert generate_status("generate.temperature=0.7") == (
        "generate   stale    configuration changed: generate.batch_size, generate.seed, "
        "generate.temperature, generate.top_k")
    assert cli("mine", "generate", sampled) == 0
    for setting in unused_when_greedy:
        key = setting.split("=")[0]
        assert generate_status("generate.temperature=0.7", setting) == (
            f"generate   stale    configuration changed: {key}")


def test_generate_dtype_is_in_the_config_key_and_the_resume_key(
        run_env, instruction_data, gpt2_tokenizer, capsys):
    """bf16 changes responses: it makes generate stale, and records left by an interrupted
    fp32 run are not taken for bf16 ones (nor the other way round)."""
    from evalpipe.config import load_config
    from evalpipe.io import sha256_json, write_jsonl
    from evalpipe.stages.generate import config_key

    settings = [f"data.source={instruction_data}", *TINY, "generate.batch_size=auto"]
    assert cli("dtype", "generate", settings) == 0
    assert "generate: batch size 64 (auto, cpu)" in capsys.readouterr().out
    assert cli("dtype", "status", [*settings, "generate.dtype=bfloat16"]) == 0
    assert "generate   stale    configuration changed: generate.batch_size, generate.dtype" in \
        capsys.readouterr().out

    # What an fp32 run killed at the end leaves: every record in the partial file, under
    # the fp32 run's key; marked, to see whether a rerun takes them.
    out = run_env / "results/dtype/generate"
    fp32 = read_jsonl(out / "responses.jsonl")
    config = load_config(SMOKE, settings)
    weights = load_finetuned(run_env / "results/dtype/finetune").sha256
    run_key = sha256_json({"config": config_key(config), "weights": weights})

    def leave_partial():
        write_jsonl(out / "responses.partial.jsonl",
                    [{**r, "response": "from the fp32 run", "_run_key": run_key} for r in fp32])

    leave_partial()
    assert cli("dtype", "generate", [*settings, "generate.dtype=bfloat16"], "--force") == 0
    assert "resuming" not in capsys.readouterr().out
    bf16 = read_jsonl(out / "responses.jsonl")
    assert all(r["response"] != "from the fp32 run" for r in bf16)
    assert [r["response_tokens"] for r in bf16] != [None] * len(bf16)

    leave_partial()  # the same key: taken as finished (so the check above can fail)
    assert cli("dtype", "generate", settings, "--force") == 0
    assert f"resuming, {len(fp32)} of {len(fp32)} already done" in capsys.readouterr().out
    assert {r["response"] for r in read_jsonl(out / "responses.jsonl")} == {"from the fp32 run"}


def test_fp32_keeps_the_key_runs_made_before_generate_dtype_had_and_bf16_keys_the_batch_size():
    """generate.dtype = "float32" is what every earlier run did: its key is theirs, so adding
    the setting reruns nothing. bf16's rounding may differ with the batch a prompt shares, so
    under bf16 the batch size is part of the key even for greedy decoding."""
    from evalpipe.config import load_config
    from evalpipe.stages.generate import config_key

    fp32 = config_key(load_config(SMOKE, ["generate.batch_size=8"]))["generate"]
    assert "dtype" not in fp32 and "batch_size" not in fp32
    bf16 = config_key(load_config(SMOKE, ["generate.batch_size=8",
                                          "generate.dtype=bfloat16"]))["generate"]
    assert (bf16["dtype"], bf16["batch_size"]) == ("bfloat16", 8)
    assert {k: v for k, v in bf16.items() if k not in ("dtype", "batch_size")} == fp32
