"""The finetune stage end to end on the real instruction data, with a tiny random-weight model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evalpipe.cli import main
from evalpipe.config import load_config
from evalpipe.gpt2.model import GPTConfig, GPTModel
from evalpipe.gpt2.weights import load_finetuned
from evalpipe.io import read_jsonl
from evalpipe.paths import RunPaths
from evalpipe.stages.finetune import train_model

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.toml"
# Smaller and shorter than the smoke run: a few steps are enough to see the loss move.
FAST = ["finetune.max_steps=6", "finetune.eval_interval=3", "finetune.checkpoint_interval=2",
        "model.emb_dim=32", "model.context_length=192", "finetune.max_length=192"]


def overrides(instruction_data, *extra: str) -> list[str]:
    return [f"data.source={instruction_data}", *FAST, *extra]


def cli(run: str, stage: str, settings: list[str]) -> int:
    args = [stage, "--config", str(SMOKE), "--run", run]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def test_finetune_writes_a_model_that_loads_and_a_lower_loss(run_env, instruction_data,
                                                             gpt2_tokenizer, capsys):
    assert cli("tiny", "finetune", overrides(instruction_data)) == 0
    out = run_env / "results/tiny/finetune"
    assert sorted(p.name for p in out.iterdir()) == [
        "loss.png", "manifest.json", "metrics.jsonl", "model.json", "model.safetensors",
        "summary.json"]  # the resumable checkpoint is gone once training finished

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["tokens_seen"] > 0
    assert summary["finetuned_test_loss"] < summary["base_test_loss"]
    assert summary["final_val_loss"] < summary["base_val_loss"]
    assert summary["stopped_early"] is False
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    assert all(m["val_loss"] > 0 for m in metrics)

    loaded = load_finetuned(out)
    assert (loaded.config.emb_dim, loaded.config.n_layers, loaded.config.context_length) == \
        (32, 2, 192)
    info = json.loads((out / "model.json").read_text())
    assert info["base_model"] == "random" and info["template"] == "alpaca"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    assert cli("tiny", "finetune", overrides(instruction_data)) == 0
    assert "finetune: up to date" in capsys.readouterr().out


class Interrupted(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(run_env, instruction_data, gpt2_tokenizer):
    """Interrupted after step 5 (checkpoint at step 4), the rerun redoes step 5 only and ends
    with exactly the weights of an uninterrupted run."""
    settings = overrides(instruction_data)
    config = load_config(SMOKE, settings)
    for run in ("whole", "broken"):
        assert cli(run, "prepare", settings) == 0
    train_model(config, RunPaths(run_env / "results", "whole"))

    broken = RunPaths(run_env / "results", "broken")

    def stop_after_five(step: int) -> None:
        if step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(config, broken, on_step=stop_after_five)
    assert (broken.stage_dir("finetune") / "checkpoint.pt").exists()
    assert not (broken.stage_dir("finetune") / "model.safetensors").exists()

    steps = []
    train_model(config, broken, on_step=steps.append)
    assert steps == [5, 6]  # resumed from the checkpoint of step 4

    whole = load_finetuned(run_env / "results/whole/finetune").model.state_dict()
    resumed = load_finetuned(run_env / "results/broken/finetune").model.state_dict()
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    strip = [{k: v for k, v in m.items() if k != "seconds"}
             for m in read_jsonl(run_env / "results/whole/finetune/metrics.jsonl")]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"}
                     for m in read_jsonl(run_env / "results/broken/finetune/metrics.jsonl")]


def test_early_stopping_restores_the_best_weights(run_env, instruction_data, gpt2_tokenizer):
    # A learning rate far too high makes the validation loss rise after the first evaluation.
    settings = overrides(instruction_data, "finetune.lr=0.5", "finetune.eval_interval=1",
                         "finetune.early_stopping=2")
    assert cli("early", "finetune", settings) == 0
    out = run_env / "results/early/finetune"
    summary = json.loads((out / "summary.json").read_text())
    metrics = read_jsonl(out / "metrics.jsonl")
    val_losses = [m["val_loss"] for m in metrics]
    assert summary["stopped_early"] is True
    assert summary["steps"] == len(metrics) < 6
    assert summary["best_val_loss"] == min(val_losses)
    # The saved model is the best one, not the last: its validation loss is the best.
    assert summary["final_val_loss"] == pytest.approx(min(val_losses), rel=1e-5)


def test_masking_the_instruction_changes_what_the_loss_counts(run_env, instruction_data,
                                                              gpt2_tokenizer):
    short = ["finetune.max_steps=1", "finetune.eval_interval=0"]
    assert cli("plain", "finetune", overrides(instruction_data, *short)) == 0
    assert cli("masked", "finetune",
               overrides(instruction_data, "finetune.mask_instruction=true", *short)) == 0
    plain = json.loads((run_env / "results/plain/finetune/summary.json").read_text())
    masked = json.loads((run_env / "results/masked/finetune/summary.json").read_text())
    # Same base weights (same seed), fewer target tokens: a different base test loss.
    assert plain["base_test_loss"] != masked["base_test_loss"]


def test_bfloat16_autocast_trains_and_saves_float32_weights(run_env, instruction_data,
                                                            gpt2_tokenizer):
    settings = overrides(instruction_data, "finetune.dtype=bfloat16", "finetune.max_steps=3",
                         "finetune.eval_interval=0")
    assert cli("bf16", "finetune", settings) == 0
    out = run_env / "results/bf16/finetune"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finetuned_test_loss"] < summary["base_test_loss"]
    loaded = load_finetuned(out)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_a_checkpoint_from_other_data_is_not_resumed(run_env, instruction_data, gpt2_tokenizer):
    """Any split changed after a kill (here one validation record) means starting over: the
    checkpoint's weights and its base-model losses belong to the old data."""
    config = load_config(SMOKE, overrides(instruction_data, "finetune.max_steps=3"))
    assert cli("changed", "prepare", overrides(instruction_data)) == 0
    paths = RunPaths(run_env / "results", "changed")

    def stop_after_two(step: int) -> None:
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(config, paths, on_step=stop_after_two)
    val = paths / "prepare/val.jsonl"
    records = read_jsonl(val)
    records[-1]["output"] += " (edited)"
    val.write_text("".join(json.dumps(r) + "\n" for r in records))

    steps = []
    train_model(config, paths, on_step=steps.append)
    assert steps == [1, 2, 3]


def test_checkpoint_interval_zero_checkpoints_per_epoch_only(run_env, instruction_data,
                                                              gpt2_tokenizer):
    settings = overrides(instruction_data, "finetune.max_steps=2", "finetune.eval_interval=0",
                         "finetune.checkpoint_interval=0")
    assert cli("nockpt", "finetune", settings) == 0
    assert json.loads((run_env / "results/nockpt/finetune/summary.json").read_text())[
        "steps"] == 2


# -- randomness: dropout with a base model that is not "random" ----------------------------------

def local_base(folder: Path) -> str:
    """A book state dict in FAST's shape, its shape in a JSON beside it: a base model whose
    loading draws nothing from torch's random generator (unlike model.base = "random")."""
    shape = GPTConfig(vocab_size=50257, context_length=192, emb_dim=32, n_heads=4, n_layers=2)
    torch.manual_seed(7)
    torch.save(GPTModel(shape).state_dict(), folder / "base.pth")
    (folder / "base.json").write_text(json.dumps(shape.to_dict()))
    return str(folder / "base.pth")


def final_weights(run_env: Path, run: str) -> dict:
    return load_finetuned(run_env / f"results/{run}/finetune").model.state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_dropout_runs_repeat_exactly(run_env, instruction_data, gpt2_tokenizer):
    """finetune.seed decides the dropout masks: two runs of a local base with dropout end with
    the same weights, whatever the process's random generators did before."""
    settings = overrides(instruction_data, f"model.base={local_base(run_env)}",
                         "model.drop_rate=0.1", "finetune.max_steps=3", "finetune.eval_interval=0")
    for run in ("first", "second", "no-dropout"):
        assert cli(run, "prepare", settings) == 0
    config = load_config(SMOKE, settings)
    train_model(config, RunPaths(run_env / "results", "first"))
    torch.rand(5)  # whatever ran in between
    train_model(config, RunPaths(run_env / "results", "second"))
    assert_same_weights(final_weights(run_env, "first"), final_weights(run_env, "second"))

    # Dropout did act: without it the same steps end elsewhere.
    train_model(load_config(SMOKE, [*settings, "model.drop_rate=0.0"]),
                RunPaths(run_env / "results", "no-dropout"))
    assert not torch.equal(final_weights(run_env, "first")["tok_emb.weight"],
                           final_weights(run_env, "no-dropout")["tok_emb.weight"])


KILLED_AT_STEP_5 = """
import os, signal, sys
from pathlib import Path
from evalpipe.config import load_config
from evalpipe.stages.finetune import train_model
from evalpipe.paths import RunPaths

config_path, results, run, kill = sys.argv[1:5]

def on_step(step):
    if kill == "kill" and step == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers
    print("step", step, flush=True)

train_model(load_config(config_path, sys.argv[5:]), RunPaths(Path(results), run), on_step=on_step)
"""


def test_a_run_killed_by_sigkill_resumes_to_the_same_weights_with_dropout(
        run_env, instruction_data, gpt2_tokenizer):
    """Killed (SIGKILL) after step 5, in a process of its own, with the checkpoint of step 4
    on disk; a new process resumes at step 5 and ends with exactly the weights and metrics of
    an uninterrupted run: the dropout masks of steps 5 and 6 are the ones the uninterrupted
    run drew."""
    # One thread everywhere: the float rounding of a sum depends on how threads split it.
    settings = overrides(instruction_data, f"model.base={local_base(run_env)}",
                         "model.drop_rate=0.1", "finetune.num_threads=1")
    for run in ("whole", "killed"):
        assert cli(run, "prepare", settings) == 0
    train_model(load_config(SMOKE, settings), RunPaths(run_env / "results", "whole"))

    def child(kill: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-c", KILLED_AT_STEP_5, str(SMOKE),
                               str(run_env / "results"), "killed", kill, *settings],
                              env=env, cwd=run_env, capture_output=True, text=True, timeout=300)

    killed = child("kill")
    assert killed.returncode == -9, killed.stderr
    assert [line for line in killed.stdout.splitlines() if line.startswith("step")] == [
        "step 1", "step 2", "step 3", "step 4"]
    assert (run_env / "results/killed/finetune/checkpoint.pt").exists()
    assert not (run_env / "results/killed/finetune/model.safetensors").exists()

    resumed = child("resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "finetune: resuming at step 4 of 6" in resumed.stdout
    assert [line for line in resumed.stdout.splitlines() if line.startswith("step")] == [
        "step 5", "step 6"]
    assert_same_weights(final_weights(run_env, "whole"), final_weights(run_env, "killed"))
    strip = [{k: v for k, v in m.items() if k != "seconds"}
             for m in read_jsonl(run_env / "results/whole/finetune/metrics.jsonl")]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"}
                     for m in read_jsonl(run_env / "results/killed/finetune/metrics.jsonl")]


# -- a Hub base model is one commit of its repository -------------------------------------------

def test_a_new_commit_on_the_hub_makes_finetune_and_generate_stale(
        run_env, instruction_data, gpt2_tokenizer, monkeypatch, capsys):
    """hf:someone/tiny-gpt2 in a Hub cache (offline) at two commits. Fine-tuned at the first;
    main moved to the second makes finetune (and a generate straight from the base) stale;
    model.revision pins the first again."""
    import huggingface_hub.constants
    from test_weights import (
        FIRST_COMMIT,
        SECOND_COMMIT,
        lay_out_hub_cache,
        safetensors_bytes,
    )
    from transformers import GPT2Config, GPT2LMHeadModel

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(run_env / "hub"))
    for seed, commit in ((0, FIRST_COMMIT), (1, SECOND_COMMIT)):
        torch.manual_seed(seed)
        hf_model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=192))
        tensors = {k: v.contiguous() for k, v in hf_model.state_dict().items()
                   if k != "lm_head.weight"}
        lay_out_hub_cache(run_env / "hub", "someone/tiny-gpt2", {
            "config.json": hf_model.config.to_json_string().encode(),
            "model.safetensors": safetensors_bytes(tensors, run_env)}, commit=commit)
    main_ref = run_env / "hub/models--someone--tiny-gpt2/refs/main"
    main_ref.write_text(FIRST_COMMIT)

    settings = overrides(instruction_data, "model.base=hf:someone/tiny-gpt2",
                         "finetune.max_steps=1", "finetune.eval_interval=0")
    base_generate = [*settings, "generate.model=base", "generate.max_new_tokens=1"]
    out = run_env / "results/hub/finetune"

    def status(extra=()) -> dict[str, str]:
        capsys.readouterr()
        assert cli("hub", "status", [*settings, *extra]) == 0
        lines = capsys.readouterr().out.splitlines()[1:]
        return {line.split()[0]: " ".join(line.split()[1:]) for line in lines}

    assert cli("hub", "finetune", settings) == 0
    assert cli("hub-base", "generate", base_generate) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["model.base_commit"] == FIRST_COMMIT
    assert json.loads((out / "model.json").read_text())["base_revision"] == FIRST_COMMIT
    assert json.loads((out / "summary.json").read_text())["base_revision"] == FIRST_COMMIT
    assert status()["finetune"].startswith("done")

    main_ref.write_text(SECOND_COMMIT)  # a new commit on the Hub, fetched into the cache
    assert status()["finetune"] == "stale configuration changed: model.base_commit"
    capsys.readouterr()
    assert cli("hub-base", "status", base_generate) == 0
    assert "generate   stale    configuration changed: model.base_commit" in \
        capsys.readouterr().out
    # Pinned to the commit it was fine-tuned at: up to date again, nothing to redo.
    assert status([f"model.revision={FIRST_COMMIT}"])["finetune"].startswith("done")

    assert cli("hub", "finetune", settings) == 0
    assert json.loads((out / "model.json").read_text())["base_revision"] == SECOND_COMMIT
    assert json.loads((out / "manifest.json").read_text())["config"]["model.base_commit"] == \
        SECOND_COMMIT
    assert status()["finetune"].startswith("done")
    assert status([f"model.revision={FIRST_COMMIT}"])["finetune"] == \
        "stale configuration changed: model.base_commit"


def test_the_key_holds_the_dtype_auto_resolves_to(run_env, instruction_data, gpt2_tokenizer,
                                                  monkeypatch, capsys):
    """finetune.dtype = "auto" is keyed by what it resolves to: on a CPU without fast bf16 the
    run is the float32 run (nothing reruns either way); on one with avx512_bf16 the same
    setting computes in bfloat16, so the float32 fine-tune is stale there."""
    from evalpipe.gpt2 import runtime

    flags = {"now": frozenset({"avx2", "avx512f"})}
    monkeypatch.setattr(runtime, "this_cpu_flags", lambda: flags["now"])
    settings = overrides(instruction_data, "finetune.device=cpu", "finetune.max_steps=2",
                         "finetune.eval_interval=0")
    auto, fp32 = [*settings, "finetune.dtype=auto"], [*settings, "finetune.dtype=float32"]
    out = run_env / "results/auto/finetune"

    def status(extra) -> str:
        capsys.readouterr()
        assert cli("auto", "status", extra) == 0
        line = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("finetune"))
        return " ".join(line.split()[1:])

    capsys.readouterr()
    assert cli("auto", "finetune", auto) == 0
    assert "finetune: computing in float32 (auto: the CPU has no AVX-512 BF16 or AMX) on cpu" \
        in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["finetune"]["dtype"] == \
        "float32"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["dtype"], summary["dtype_reason"]) == \
        ("float32", "auto: the CPU has no AVX-512 BF16 or AMX")
    info = json.loads((out / "model.json").read_text())
    assert (info["trained_in"], info["trained_in_reason"]) == \
        ("float32", "auto: the CPU has no AVX-512 BF16 or AMX")
    weights = (out / "model.safetensors").read_bytes()
    assert status(fp32).startswith("done")
    assert cli("auto", "finetune", fp32) == 0
    assert "finetune: up to date" in capsys.readouterr().out

    flags["now"] = frozenset({"avx2", "avx512f", "avx512_bf16"})  # another machine
    assert status(auto) == "stale configuration changed: finetune.dtype"
    assert status(fp32).startswith("done")
    assert cli("auto", "finetune", auto) == 0
    assert "finetune: computing in bfloat16 (auto: the CPU has avx512_bf16) on cpu" in \
        capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["finetune"]["dtype"] == \
        "bfloat16"
    assert json.loads((out / "summary.json").read_text())["dtype"] == "bfloat16"
    assert (out / "model.safetensors").read_bytes() != weights
    assert status(auto).startswith("done")
    assert status([*settings, "finetune.dtype=bfloat16"]).startswith("done")
    assert status(fp32) == "stale configuration changed: finetune.dtype"
