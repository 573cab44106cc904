"""What the compare tests share: four test items, judge/scores.jsonl records with every field
of docs/records.md, runs written from them under a results folder, and the real command line
in a process of its own. The tests import it by name: pytest's default import mode puts the
folder of a test file (tests/compare/, no __init__.py) on sys.path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from evalpipe.config import RunConfig
from evalpipe.io import write_json, write_jsonl
from evalpipe.records import content_id

ITEMS = [
    {"instruction": "Rewrite the sentence in the passive voice, please.",
     "input": "The cat chased the mouse.", "output": "The mouse was chased by the cat."},
    {"instruction": "What is 2+2?", "input": "", "output": "4"},
    {"instruction": "Name a <b>bold</b> tag & its use.", "input": "", "output": "<b>"},
    {"instruction": "Translate 'hello' to French.", "input": "", "output": "Bonjour"},
]


def judged(item: dict, response: str | None, state: str, score: int | None, *,
           judge_model: str = "llama3", repeats: list[dict] | None = None) -> dict:
    """A judge/scores.jsonl record with every field of docs/records.md."""
    record = {
        "id": content_id(item), **item,
        "response": response, "prompt_tokens": 20,
        "response_tokens": len((response or "").split()), "stop_reason": "eos", "seconds": 0.1,
        "state": state, "score": score,
        "reason": "Checked against the reference." if state == "scored" else None,
        "raw_reply": None if state in ("empty", "error") else str(score),
        "error": "timed out after 3 retries" if state == "error" else None,
        "judge_backend": "ollama", "judge_model": judge_model, "judge_digest": "sha256:0a1b",
        "judge_template": "book", "prompt_sha256": "0" * 64, "judge_seconds": 0.5,
        "cached": False,
    }
    if repeats is not None:
        record["repeats"] = repeats
    return record


def write_run(results: Path, name: str, records: list[dict], base: str,
              losses: tuple[float, float] | None = None) -> None:
    config = RunConfig()
    config.model.base = base
    if losses is None:  # responses imported: no fine-tuning in this run
        config.generate.from_file = "responses.json"
    (results / name).mkdir(parents=True, exist_ok=True)
    (results / name / "config.toml").write_text(config.to_toml(), encoding="utf-8")
    write_jsonl(results / name / "judge/scores.jsonl", records)
    if losses is not None:
        write_json(results / name / "finetune/summary.json", {
            "base_model": f"resolved:{base}", "base_sha256": "f" * 64,
            "base_test_loss": losses[0], "base_val_loss": losses[0] + 0.1,
            "finetuned_test_loss": losses[1], "final_val_loss": losses[1] + 0.1,
            "best_val_loss": losses[1] + 0.05, "steps": 10, "tokens_seen": 5000, "epochs": 2.0,
            "stopped_early": False, "train_seconds": 12.5, "parameters": 1000})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalpipe", *args], capture_output=True,
                          text=True, timeout=120)
