"""Together mode: what a rerun asks again (nothing, the errors, everything when the judge
or the prompt changed) and what an interrupted run keeps. Runs and judge: see
tests/judging/together_runs.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from standins import (
    OllamaStandIn,
    StandInFailure,
    prompt_of,
    together_entries,
    together_judge,
    unused_url,
)
from together_runs import (
    ITEMS,
    MODELS,
    OUT,
    compare,
    expected_score,
    model_scores,
    passes,
    reference_item,
)

from evalpipe.cli import main
from evalpipe.io import read_jsonl, read_partial_jsonl


def test_a_rerun_asks_nothing(runs, capsys):
    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        first = {m: model_scores(runs, m) for m in MODELS}
        asked = len(standin.requests)
        capsys.readouterr()

        # Up to date: nothing is asked, not even a server.
        assert compare(unused_url()) == 0
        assert capsys.readouterr().out.startswith("together: up to date (judged ")

        # Without the manifest the judge runs again, and every reply comes from the cache.
        (runs / OUT / "together/manifest.json").unlink()
        assert compare(standin.url) == 0
        assert len(standin.requests) == asked
        out = capsys.readouterr().out
        assert "together: running (never judged together)\n" in out
        assert "; 9 requests, 9 from the judgment cache\n" in out
        again = {m: model_scores(runs, m) for m in MODELS}
        for model in MODELS:
            for i in ITEMS:
                a, b = first[model][i], again[model][i]
                assert b["cached"] == (a["state"] != "empty")
                assert {k: v for k, v in a.items() if k not in ("cached", "judge_seconds")} == \
                    {k: v for k, v in b.items() if k not in ("cached", "judge_seconds")}

        # A changed judge setting makes it stale; the order the runs are named in does not
        # change the shuffles, so the same prompts come from the cache.
        assert compare(standin.url, "judge.swap=true") == 0
        assert "together: running (judge settings changed)" in capsys.readouterr().out
        assert len(standin.requests) == asked + 9  # only the reversed passes are new
        assert main(["compare", "c", "a", "b", "--mode", "together", "--resamples", "50",
                     "--set", f"judge.host={standin.url}"]) == 0
        assert len(standin.requests) == asked + 9
        assert read_jsonl(runs / "compare-c-vs-a-vs-b/together/items.jsonl")[3]["order"] == \
            passes(runs)[6]["order"]  # item 3's first pass, as in the a-b-c comparison


def test_a_new_digest_or_prompt_text_or_parse_rule_makes_the_together_judgment_stale(
        runs, capsys, monkeypatch):
    import hashlib

    import evalpipe.judging.prompts
    from evalpipe.judging.prompts import together_template_sha256

    with OllamaStandIn(together_judge) as standin:
        assert compare(standin.url) == 0
        manifest = json.loads((runs / OUT / "together/manifest.json").read_text())
        old_digest = standin.models["llama3:latest"]
        assert manifest["identity"] == {
            "digest": old_digest, "prompt_template": together_template_sha256("book"),
            "parse_rule": evalpipe.judging.prompts.PARSE_RULE_VERSION}
        asked = len(standin.requests)

        # `ollama pull llama3` brought new weights: everything is asked again.
        new_digest = hashlib.sha256(b"llama3 pulled again").hexdigest()
        standin.models["llama3:latest"] = new_digest
        capsys.readouterr()
        assert compare(standin.url) == 0
        assert (f"together: running (digest changed: {old_digest[:12]} -> {new_digest[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == asked + 9
        assert compare(standin.url) == 0
        assert capsys.readouterr().out.startswith("together: up to date (judged ")

        # Another prompt text: new prompts, asked anew.
        old = together_template_sha256("book")
        monkeypatch.setattr(evalpipe.judging.prompts, "TOGETHER_INTRO",
                            evalpipe.judging.prompts.TOGETHER_INTRO + " Be fair.")
        new = together_template_sha256("book")
        assert compare(standin.url) == 0
        assert (f"together: running (prompt_template changed: {old[:12]} -> {new[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == asked + 18
        assert prompt_of(standin.requests[-1]).startswith("You are grading ")
        assert " Be fair.\n" in prompt_of(standin.requests[-1])

        # A new parsing rule: stale, and the cached replies are read again, nothing is asked.
        version = evalpipe.judging.prompts.PARSE_RULE_VERSION
        monkeypatch.setattr(evalpipe.judging.prompts, "PARSE_RULE_VERSION", version + 1)
        assert compare(standin.url) == 0
        out = capsys.readouterr().out
        assert f"together: running (parse_rule changed: {version} -> {version + 1})\n" in out
        assert "; 9 requests, 9 from the judgment cache\n" in out
        assert len(standin.requests) == asked + 18
        url = standin.url

    # The server is down: the digest is not checked, the judgment is kept.
    assert compare(url) == 0
    out = capsys.readouterr().out
    assert out.startswith("together: up to date (judged ")
    assert (f"; digest not checked: judge server unreachable (cannot reach Ollama at {url}: is "
            "it running? start it with 'ollama serve'))\n") in out


def test_errors_are_asked_again_on_the_next_run(runs, capsys):
    def broken_on_item_91(body):
        if together_entries(body) is not None and reference_item(body) == 91:
            return StandInFailure(500, "model runner crashed")
        return together_judge(body)

    with OllamaStandIn(broken_on_item_91) as standin:
        assert compare(standin.url) == 0
        out = capsys.readouterr().out
        assert "0 unparseable, 3 error; 9 requests" in out
        first_id = passes(runs)[6]["id"]
        assert (f"together: 1 judgments ended in error (first: item 6 id {first_id}: Ollama at "
                f"{standin.url} answered HTTP 500: model runner crashed (after 2 attempts)); "
                "run the same command again to ask for them, the rest comes from the judgment "
                "cache\n") in out
        assert {m: model_scores(runs, m)[91]["state"] for m in MODELS} == dict.fromkeys(
            MODELS, "error")
        assert not (runs / OUT / "together/manifest.json").exists()
        standin.reply = together_judge
        before = len(standin.requests)
        assert compare(standin.url) == 0
        assert [reference_item(b) for b in standin.requests[before:]] == [91]
    assert model_scores(runs, "a")[91]["score"] == 100


def test_a_killed_together_judge_loses_no_finished_judgment(runs, run_env):
    def slow(body):
        time.sleep(0.15)
        return together_judge(body)

    with OllamaStandIn(slow) as standin:
        command = [sys.executable, "-m", "evalpipe", "compare", *MODELS, "--mode", "together",
                   "--set", f"judge.host={standin.url}", "--set", "judge.concurrency=1"]
        process = subprocess.Popen(command, cwd=run_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        partial = runs / OUT / "together/items.partial.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (runs / OUT / "together/items.jsonl").exists()
        assert not (runs / OUT / "together/manifest.json").exists()
        kept = read_partial_jsonl(partial)
        assert len(kept) >= 3
        # The cache would also spare the judge; without it only the partial file can.
        for leftover in runs.glob("judge-cache.sqlite*"):
            leftover.unlink()

        before = len(standin.requests)
        assert compare(standin.url) == 0
        again = [reference_item(body) for body in standin.requests[before:]]
        # 9 items need the judge (item 92 has nothing to show); the finished ones are not asked.
        assert len(again) == 9 - len([r for r in kept if r["order"]])
        assert not set(again) & {ITEMS[r["index"]] for r in kept}
    assert not partial.exists()
    for model in MODELS:
        assert {i: r["score"] for i, r in model_scores(runs, model).items()} == {
            i: expected_score(model, i) for i in ITEMS}

