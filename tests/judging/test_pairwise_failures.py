"""Pairwise mode when things go wrong or change: empty responses, unparseable replies, server
errors, a server that is down, bad settings, and a judgment gone stale (new weights, new
prompt text, new parse rule). Through the command line against the stand-in Ollama server."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from pairwise_runs import (
    ITEMS,
    N,
    board_of,
    compare,
    even_response,
    failing_on,
    make_runs,
    out_of,
    preference_judge,
)
from standins import OllamaStandIn, prompt_of, unused_url

from evalpipe.cli import main
from evalpipe.io import read_jsonl

QUESTIONS = "pairwise/questions.jsonl"


def test_server_errors_are_recorded_left_out_and_asked_again(pairwise_runs, capsys):
    broken = {ITEMS[0], ITEMS[1]}
    with OllamaStandIn(failing_on(broken, preference_judge())) as standin:
        assert compare(standin.url) == 0
        first = len(standin.requests)
    out = capsys.readouterr().out
    failed = 2 * 3 * 2  # 2 items x 3 pairs x 2 orders
    assert (f"{3 * N * 2 - failed} judged, 0 empty, 0 unparseable, {failed} error; "
            f"{3 * N * 2} requests, 0 from the judgment cache\n") in out
    assert f"pairwise: {failed} questions ended in error (first: item 0 id " in out
    assert f"{failed} of {3 * N * 2} questions were left out of the fit (0 unparseable, " \
           f"{failed} error)" in out
    records = read_jsonl(out_of(pairwise_runs) / QUESTIONS)
    errors = [r for r in records if r["state"] == "error"]
    assert len(errors) == failed and {r["index"] for r in errors} == {0, 1}
    assert all("stand-in down for this item" in r["error"] and r["verdict"] is None
               for r in errors)
    board = board_of(pairwise_runs)
    assert board["pairwise"]["left_out"] == {"unparseable": 0, "error": failed,
                                             "total": failed}
    assert board["pairwise"]["fitted"] == 3 * N * 2 - failed
    assert not (out_of(pairwise_runs) / "pairwise/manifest.json").exists()

    # The next run asks exactly the failed questions again (retries: 1 -> 2 tries each
    # the first time; now the stand-in answers).
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
        assert len(standin.requests) == failed
    assert first == 3 * N * 2 - failed + 2 * failed
    assert f"{3 * N * 2} judged, 0 empty, 0 unparseable, 0 error" in capsys.readouterr().out
    assert (out_of(pairwise_runs) / "pairwise/manifest.json").exists()


def test_unparseable_replies_are_recorded_and_counted(pairwise_runs, capsys):
    judge = preference_judge()

    def muddled(body):
        if "w0x" in prompt_of(body) or f"word{ITEMS[0]}a" in prompt_of(body):
            return "Both responses have merit. [[A>B]] or maybe [[B>A]]"
        return judge(body)

    with OllamaStandIn(muddled) as standin:
        assert compare(standin.url) == 0
        asked = len(standin.requests)
        records = read_jsonl(out_of(pairwise_runs) / QUESTIONS)
        unparseable = [r for r in records if r["state"] == "unparseable"]
        assert len(unparseable) == 3 * 2 and {r["index"] for r in unparseable} == {0}
        assert unparseable[0]["problem"] == "several verdicts: A>B, B>A"
        assert unparseable[0]["raw_reply"].startswith("Both responses have merit.")
        board = board_of(pairwise_runs)
        assert board["pairwise"]["left_out"] == {"unparseable": 6, "error": 0, "total": 6}
        assert "6 of 180 questions were left out of the fit (6 unparseable, 0 error)" in \
            capsys.readouterr().out
        # The judge's answer stands: a rerun asks nothing.
        assert compare(standin.url) == 0
        assert len(standin.requests) == asked


def test_a_server_that_is_down_stops_with_one_line(pairwise_runs, capsys):
    url = unused_url()
    assert compare(url) == 1
    err = capsys.readouterr().err
    assert err.startswith("evalpipe: error: judge: ") and url in err and err.count("\n") == 1
    assert not (out_of(pairwise_runs) / QUESTIONS).exists()


@pytest.mark.parametrize("settings, message", [
    (("judge.pairs='anchor'",),
     ("judge.anchor: judge.pairs = 'anchor' needs the run every model is compared with "
      "(judge.anchor = \"RUN\")")),
    (("judge.pairs='some'",), "judge.pairs: expected one of 'all', 'anchor', got 'some'"),
    (("judge.anchor='zz'",), "judge.anchor = 'zz' is not one of the runs compared (a, b, c)"),
    (("judge.repeats=2",), ("judge.repeats = 2: pairwise mode asks each question once per "
                            "order; set judge.repeats = 1")),
])
def test_bad_settings_stop_with_one_line(pairwise_runs, capsys, settings, message):
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url, *settings) == 1
        assert standin.requests == []
    assert capsys.readouterr().err == f"evalpipe: error: {message}\n"


def test_one_run_is_not_a_pairwise_comparison(pairwise_runs, capsys):
    assert main(["compare", "a", "--mode", "pairwise"]) == 1
    assert capsys.readouterr().err == ("evalpipe: error: pairwise mode compares two runs or "
                                       "more; give more runs\n")


def test_new_weights_prompt_text_or_parse_rule_make_the_judgment_stale(
        pairwise_runs, capsys, monkeypatch):
    from evalpipe.judging import prompts

    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
        manifest = json.loads((out_of(pairwise_runs) / "pairwise/manifest.json").read_text())
        old_digest = standin.models["llama3:latest"]
        assert manifest["identity"] == {"digest": old_digest,
                                        "prompt_template": prompts.pairwise_template_sha256(),
                                        "parse_rule": prompts.PAIRWISE_PARSE_RULE_VERSION}
        asked = len(standin.requests)

        new_digest = hashlib.sha256(b"llama3 pulled again").hexdigest()
        standin.models["llama3:latest"] = new_digest
        capsys.readouterr()
        assert compare(standin.url) == 0
        assert (f"pairwise: running (digest changed: {old_digest[:12]} -> {new_digest[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == 2 * asked  # new weights: every question anew
        assert compare(standin.url) == 0
        assert capsys.readouterr().out.startswith("pairwise: up to date (judged ")

        old = prompts.pairwise_template_sha256()
        monkeypatch.setattr(prompts, "PAIRWISE_INTRO", prompts.PAIRWISE_INTRO + " Be fair.")
        new = prompts.pairwise_template_sha256()
        assert compare(standin.url) == 0
        assert (f"pairwise: running (prompt_template changed: {old[:12]} -> {new[:12]})\n"
                in capsys.readouterr().out)
        assert len(standin.requests) == 3 * asked
        assert " Be fair.\n" in prompt_of(standin.requests[-1])

        version = prompts.PAIRWISE_PARSE_RULE_VERSION
        monkeypatch.setattr(prompts, "PAIRWISE_PARSE_RULE_VERSION", version + 1)
        assert compare(standin.url) == 0
        out = capsys.readouterr().out
        assert f"pairwise: running (parse_rule changed: {version} -> {version + 1})\n" in out
        assert f"; {asked} requests, {asked} from the judgment cache\n" in out
        assert len(standin.requests) == 3 * asked


def missing_some(model: str, i: int) -> str | None:
    """even_response, except: b did not answer record 255 (not imported) and wrote only
    spaces for 256; c wrote nothing for 256."""
    if (model, i) == ("b", ITEMS[0]):
        return None
    if i == ITEMS[1] and model in "bc":
        return "   " if model == "b" else ""
    return even_response(model, i)


def test_empty_responses_are_decided_without_asking(run_env, tmp_path_factory, capsys,
                                                   gpt2_tokenizer):
    folder = tmp_path_factory.mktemp("pairwise-empty")
    make_runs(folder, missing_some, models=("a", "b", "c"))
    shutil.copytree(folder / "results", run_env / "results")
    with OllamaStandIn(preference_judge()) as standin:
        assert compare(standin.url) == 0
        assert len(standin.requests) == 3 * N * 2 - 2 * 2 - 3 * 2
    records = read_jsonl(out_of(run_env / "results") / QUESTIONS)
    empty = {(r["index"], r["first"], r["second"]): r["verdict"] for r in records
             if r["state"] == "empty"}
    assert empty == {(0, "a", "b"): "A>>B", (0, "b", "a"): "B>>A",
                     (0, "b", "c"): "B>>A", (0, "c", "b"): "A>>B",
                     (1, "a", "b"): "A>>B", (1, "b", "a"): "B>>A",
                     (1, "a", "c"): "A>>B", (1, "c", "a"): "B>>A",
                     (1, "b", "c"): "A=B", (1, "c", "b"): "A=B"}
    assert all(r["raw_reply"] is None and r["first_tokens"] * r["second_tokens"] == 0
               for r in records if r["state"] == "empty")
    assert "10 empty, 0 unparseable, 0 error" in capsys.readouterr().out


def test_a_killed_pairwise_judge_loses_no_finished_question(pairwise_runs, run_env):
    import signal
    import subprocess
    import sys
    import time

    from evalpipe.io import read_partial_jsonl

    judge = preference_judge()

    def slow(body):
        time.sleep(0.05)
        return judge(body)

    with OllamaStandIn(slow) as standin:
        command = [sys.executable, "-m", "evalpipe", "compare", "a", "b", "c", "--mode",
                   "pairwise", "--set", f"judge.host={standin.url}",
                   "--set", "judge.concurrency=1"]
        process = subprocess.Popen(command, cwd=run_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        partial = out_of(pairwise_runs) / "pairwise/questions.partial.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.read_text().count("\n") >= 5:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out_of(pairwise_runs) / QUESTIONS).exists()
        kept = read_partial_jsonl(partial)
        assert len(kept) >= 5
        # The cache would also spare the judge; without it only the partial file can.
        for leftover in pairwise_runs.glob("judge-cache.sqlite*"):
            leftover.unlink()

        before = len(standin.requests)
        assert compare(standin.url) == 0
        assert len(standin.requests) - before == 3 * N * 2 - len(kept)
    assert not partial.exists()
    assert len(read_jsonl(out_of(pairwise_runs) / QUESTIONS)) == 3 * N * 2
