"""Several base models in one config (`model.bases`, evalpipe/sweep.py): one run per base, each
fine-tuned and generated on its own and cached by the stage cache, then judged together (or
alone) and compared into results/compare-<run>/.

End to end with two tiny GPT-2-shaped checkpoints written here (a book state dict with its
shape in a JSON beside it, and a folder saved by evalpipe.gpt2.weights.save_finetuned), two
optimizer steps, eight new tokens, and the stand-in judge over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from standins import OllamaStandIn, together_judge, unused_url

from evalpipe.cli import main
from evalpipe.config import ConfigError, load_config
from evalpipe.gpt2.model import GPTConfig, GPTModel
from evalpipe.gpt2.weights import save_finetuned
from evalpipe.io import read_jsonl
from evalpipe.sweep import base_slug, sub_runs

TINY = GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=2, n_layers=1,
                 qkv_bias=False, tie_weights=True)


# -- naming the runs ------------------------------------------------------------------------------

def test_slugs_name_each_base(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert base_slug("gpt2-medium") == "gpt2-medium"
    assert base_slug("random") == "random"
    assert base_slug("hf:me/my.model") == "hf-me-my.model"
    assert base_slug("checkpoints/mine.pth") == "mine"
    assert base_slug(str(tmp_path / "ckpt") + "/") == "ckpt"
    assert base_slug("~/models/gpt 2 (v1).safetensors") == "gpt-2-v1"


def test_one_run_per_base_with_the_base_in_its_config():
    config = load_config(None, ["model.bases=['gpt2', 'a/mine.pth', 'b/mine.pth']",
                                "finetune.epochs=3"])
    subs = sub_runs(config, "duo")
    # "a/mine.pth" and "b/mine.pth" would both be "mine": each gets its own hash appended
    clash = [f"mine-{hashlib.sha256(s.encode()).hexdigest()[:8]}"
             for s in ("a/mine.pth", "b/mine.pth")]
    assert [(s.base, s.name) for s in subs] == [
        ("gpt2", "duo--gpt2"), ("a/mine.pth", f"duo--{clash[0]}"),
        ("b/mine.pth", f"duo--{clash[1]}")]
    for sub in subs:
        assert (sub.config.model.base, sub.config.model.bases) == (sub.base, [])
        assert sub.config.finetune.epochs == 3
    assert config.model.bases == ["gpt2", "a/mine.pth", "b/mine.pth"]  # left as it was
    with pytest.raises(ConfigError, match="model.bases: 'gpt2' is listed twice"):
        sub_runs(load_config(None, ["model.bases=['gpt2', 'gpt2']"]), "duo")


# -- end to end ------------------------------------------------------------------------------------

def tiny_checkpoints(folder: Path) -> tuple[str, str]:
    """A book state dict (tiny-a.pth, its shape in tiny-a.json) and a save_finetuned folder
    (tiny-b/), with different random weights."""
    torch.manual_seed(1)
    torch.save(GPTModel(TINY).state_dict(), folder / "tiny-a.pth")
    (folder / "tiny-a.json").write_text(json.dumps(
        {"vocab_size": 50257, "context_length": 128, "emb_dim": 32, "n_heads": 2, "n_layers": 1,
         "qkv_bias": False, "tie_weights": True}))
    torch.manual_seed(2)
    save_finetuned(GPTModel(TINY), TINY, folder / "tiny-b", {})
    return str(folder / "tiny-a.pth"), str(folder / "tiny-b")


def write_config(folder: Path, bases: list[str], url: str, name: str = "duo.toml") -> Path:
    records = [{"instruction": f"Task {i}", "input": "",
                "output": f"word{i}a word{i}b word{i}c"} for i in range(100)]
    (folder / "data.json").write_text(json.dumps(records))
    path = folder / name
    path.write_text(f"""\
[data]
source = {json.dumps(str(folder / "data.json"))}

[model]
bases = {json.dumps(bases)}

[finetune]
epochs = 1
batch_size = 8
max_length = 64
max_steps = 2
eval_interval = 0
num_threads = 1

[generate]
max_new_tokens = 8
batch_size = 10

[judge]
host = {json.dumps(url)}
mode = "together"
retries = 1
timeout = 10.0

[aggregate]
bootstrap_resamples = 100
""")
    return path


def test_evaluate_fine_tunes_each_base_and_compares_them(run_env, gpt2_tokenizer, capsys):
    base_a, base_b = tiny_checkpoints(run_env)
    results = run_env / "results"
    with OllamaStandIn(together_judge) as standin:
        config = write_config(run_env, [base_a, base_b], standin.url)
        assert main(["evaluate", "--config", str(config)]) == 0
        asked = len(standin.requests)
        out = capsys.readouterr().out

        runs = ["duo--tiny-a", "duo--tiny-b"]
        assert f"== run duo--tiny-a (model.base = {base_a})\n" in out
        assert f"== run duo--tiny-b (model.base = {base_b})\n" in out
        assert "== compare-duo (2 base models, judge.mode = together)\n" in out
        for run, base in zip(runs, (base_a, base_b)):
            folder = results / run
            # An ordinary one-base run: its base in its config, fine-tuned and generated.
            written = load_config(folder / "config.toml")
            assert (written.model.base, written.model.bases) == (base, [])
            summary = json.loads((folder / "finetune/summary.json").read_text())
            assert summary["steps"] == 2
            assert len(read_jsonl(folder / "generate/responses.jsonl")) == 10
            assert not (folder / "judge").exists()  # judged together, not alone
        # The two models did answer differently, so the comparison compares something.
        responses = [[r["response"] for r in read_jsonl(results / run / "generate/responses.jsonl")]
                     for run in runs]
        assert responses[0] != responses[1]

        board = json.loads((results / "compare-duo/leaderboard.json").read_text())
        assert board["name"] == "duo" and board["mode"] == "together"
        assert sorted(board["runs"]) == runs
        rows = {row["model"]: row for row in board["models"]}
        assert set(rows) == set(runs)
        for run, base in zip(runs, (base_a, base_b)):
            summary = json.loads((results / run / "finetune/summary.json").read_text())
            assert rows[run]["base_model"] == base
            assert rows[run]["finetuned_test_loss"] == round(summary["finetuned_test_loss"], 4)
            scores = read_jsonl(results / "compare-duo/together/scores" / f"{run}.jsonl")
            assert [r["response"] for r in scores] == responses[runs.index(run)]
            assert rows[run]["items"] == 10
        assert len(board["pairs"]) == 1
        assert (results / "compare-duo/compare.html").exists()

        # A second evaluate runs nothing: every stage and the together judgment are up to
        # date, and the judge is not even contacted.
        down = write_config(run_env, [base_a, base_b], unused_url(), "down.toml")
        assert main(["evaluate", "--config", str(down), "--run", "duo"]) == 0
        assert len(standin.requests) == asked
        again = capsys.readouterr().out
        assert again.count("finetune: up to date") == 2
        assert again.count("generate: up to date") == 2
        assert "together: up to date" in again
        assert ": running (" not in again
        # The judge server is down: its digest could not be checked, and that is said.
        assert "; digest not checked: judge server unreachable (cannot reach Ollama at " in again

        # status shows every sub-run, then the comparison.
        assert main(["status", "--config", str(config)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"run duo--tiny-a (model.base = {base_a}) in {results}/duo--tiny-a"
        assert [line.split()[:2] for line in lines[1:4]] == [
            ["prepare", "done"], ["finetune", "done"], ["generate", "done"]]
        assert lines[4] == f"run duo--tiny-b (model.base = {base_b}) in {results}/duo--tiny-b"
        assert lines[8] == f"comparison compare-duo in {results}/compare-duo"
        assert lines[9].split()[:2] == ["together", "done"]
        assert lines[10].split()[:2] == ["compare", "done"]
        # With the judge server down the digest is not checked, and status says so.
        assert main(["status", "--config", str(down), "--run", "duo"]) == 0
        line = capsys.readouterr().out.splitlines()[9]
        assert line.split()[:2] == ["together", "done"]
        assert "; digest not checked: judge server unreachable (cannot reach Ollama at " in line

        # A plain (single-mode) compare of runs made to be judged together says what to use.
        assert main(["compare", *runs]) == 1
        assert capsys.readouterr().err == (
            f"evalpipe: error: run duo--tiny-a: {results}/duo--tiny-a/judge/scores.jsonl not "
            "found: the run is set to be judged together with others; use 'evalpipe compare "
            "... --mode together'\n")

        # judge.mode = "single": the same fine-tuned models (cached), each judged alone, then
        # compared; the together judgment stays beside it.
        assert main(["evaluate", "--config", str(config), "--set", "judge.mode='single'",
                     "--set", "judge.canaries=false"]) == 0
        single = capsys.readouterr().out
        assert single.count("finetune: up to date") == 2
        assert single.count("judge: running") == 2
        board = json.loads((results / "compare-duo/leaderboard.json").read_text())
        assert board["mode"] == "single"
        assert sorted(row["model"] for row in board["models"]) == runs
        for run in runs:
            assert (results / run / "judge/scores.jsonl").exists()
            assert (results / run / "aggregate").exists()

        # Back to together: the runs' own judgments now stand beside the together ranking.
        assert main(["evaluate", "--config", str(config)]) == 0
        board = json.loads((results / "compare-duo/leaderboard.json").read_text())
        assert board["mode"] == "together"
        assert [row["model"] for row in board["modes"]["models"]] == \
            [row["model"] for row in board["models"]]
        assert sorted(e["a"] for e in board["agreement"] if e["kind"] == "modes") == [
            f"{run} together" for run in runs]
        # the single-mode judgments only: one per non-empty response
        nonempty = sum(bool(response.strip()) for run in responses for response in run)
        assert len(standin.requests) == asked + nonempty


def test_without_bases_nothing_changes(run_env, capsys):
    config = load_config(None, [])
    assert config.model.bases == []
    # status of a plain run: one run, the five stages, no comparison
    assert main(["status", "--config", str(Path(__file__).parent.parent / "configs/smoke.toml"),
                 "--run", "solo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run solo in {run_env}/results/solo"
    assert [line.split()[0] for line in lines[1:]] == [
        "prepare", "finetune", "generate", "judge", "aggregate"]
