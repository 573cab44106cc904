"""The judge stage, driven through the command line against stand-in judge servers (real HTTP on
127.0.0.1, through the real `ollama` and `openai` clients; see tests/standins.py).

Every test makes the same small run: 100 instruction records, of which the smoke config's
book split makes the last-but-five ten the test items, and imported responses chosen so that
the stand-in judge (100 x word-overlap F1 with the correct output) gives known scores.
"""

import hashlib
import itertools
import json
import math
import random
import signal
import statistics
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from standins import (
    DEFAULT_OLLAMA_MODELS,
    OllamaStandIn,
    OpenAIStandIn,
    StandInFailure,
    book_judge,
    fooled_by_canaries,
    parse_book_prompt,
    parse_rubric_prompt,
    prompt_of,
    WithLogprobs,
    unused_url,
)

from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.io import DataError, read_jsonl, read_partial_jsonl
from evalpipe.judging.backends import JudgeIdentity, Reply
from evalpipe.judging.cache import JudgmentCache
from evalpipe.judging.engine import read_responses

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs/smoke.toml")  # judge: retries 1, concurrency 4
DIGEST = DEFAULT_OLLAMA_MODELS["llama3:latest"]


def output_of(i: int) -> str:
    return f"word{i}a word{i}b word{i}c word{i}d"


# The ten test items are records 85..94. Response (None: no response imported) and the
# stand-in's book score, round(100 * F1).
UNPARSEABLE = "please answer eighty"
BROKEN = "this one breaks the server"
RESPONSES = {
    85: ("word85a word85b word85c other", 75),  # precision 3/4, recall 3/4
    86: ("", None),  # empty
    87: ("word87a word87b", 67),  # precision 1, recall 1/2: F1 2/3
    88: (UNPARSEABLE, None),
    89: (BROKEN, None),
    90: ("nothing in common", 0),
    91: (output_of(91), 100),
    92: ("   ", None),  # empty: only whitespace
    93: (None, None),  # not in the imported file: null, empty
    94: (output_of(94) + " word94e", 89),  # precision 4/5, recall 1: F1 8/9
}
STATES = {85: "scored", 86: "empty", 87: "scored", 88: "unparseable", 89: "error",
          90: "scored", 91: "scored", 92: "empty", 93: "empty", 94: "scored"}
ASKED = [85, 87, 88, 89, 90, 91, 94]  # the items with a non-empty response


def response_of(body: dict) -> str:
    prompt = prompt_of(body)
    parsed = parse_book_prompt(prompt) or parse_rubric_prompt(prompt)
    return parsed[1]


def scripted(body: dict):
    """The stand-in judge, except for two responses: one gets a reply with no number, one a
    server error."""
    response = response_of(body)
    if response == UNPARSEABLE:
        return "eighty"
    if response == BROKEN:
        return StandInFailure(500, "model runner crashed")
    return book_judge(body)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "0.01")


@pytest.fixture
def run(run_env, gpt2_tokenizer):
    """`run(command, url, *settings, force=False)`: an evalpipe command on the small run, with
    the judge at `url` and `--set` for each setting; `run.root` is results/r."""
    records = [{"instruction": f"Task {i}", "input": f"input {i}" if i % 2 else "",
                "output": output_of(i)} for i in range(100)]
    (run_env / "data.json").write_text(json.dumps(records))
    responses = [{**records[i], "model_response": response}
                 for i, (response, _) in RESPONSES.items() if response is not None]
    (run_env / "responses.json").write_text(json.dumps(responses))

    def evalpipe(command: str, url: str | None = None, *settings: str, force: bool = False) -> int:
        args = [command, *(["--force"] if force else []), "--config", SMOKE, "--run", "r",
                "--set", f"data.source={run_env / 'data.json'}",
                "--set", f"generate.from_file={run_env / 'responses.json'}",
                "--set", "generate.allow_partial=true"]
        if url is not None:
            args += ["--set", f"judge.host={url}"]
        for setting in settings:
            args += ["--set", setting]
        return main(args)

    evalpipe.root = run_env / "results/r"
    return evalpipe


def scores(run) -> dict[int, dict]:
    """scores.jsonl by item number (85..94), in file order."""
    records = read_jsonl(run.root / "judge/scores.jsonl")
    return {int(r["instruction"].split()[1]): r for r in records}


def asked(standin, start: int = 0) -> list[str]:
    return [response_of(body) for body in standin.requests[start:]]


# -- states, records, summary ----------------------------------------------------------------

def test_every_item_ends_in_one_state_with_the_exact_record(run, capsys):
    with OllamaStandIn(scripted) as standin:
        assert run("judge", standin.url) == 0
    out = capsys.readouterr().out
    assert ("judge: 10 items: 5 scored, 3 empty, 1 unparseable, 1 error; canaries: good mean "
            "100, bad mean 0; 0 from the judgment cache\n") in out
    assert (f"judge: 1 items ended in error (first: id {scores(run)[89]['id']}: Ollama at "
            f"{standin.url} answered HTTP 500: model runner crashed (after 2 attempts)); "
            "the judge is incomplete: 'evalpipe judge' asks for them again, the rest comes "
            "from the judgment cache\n") in out

    records = read_jsonl(run.root / "judge/scores.jsonl")
    responses = read_jsonl(run.root / "generate/responses.jsonl")
    # Every item once, in test order, the response record kept whole in front.
    assert [r["id"] for r in records] == [r["id"] for r in responses]
    for record, response in zip(records, responses):
        assert list(record)[:len(response)] == list(response)
        assert {k: record[k] for k in response} == response
    by_item = scores(run)
    assert {i: r["state"] for i, r in by_item.items()} == STATES
    assert {i: r["score"] for i, r in by_item.items()} == {
        85: 75, 86: 0, 87: 67, 88: None, 89: None, 90: 0, 91: 100, 92: 0, 93: 0, 94: 89}

    # Each item with a response once, the broken one retries + 1 = 2 times; then the ten
    # canaries (five good, five bad).
    item_responses = {RESPONSES[i][0] for i in ASKED}
    assert sorted(r for r in asked(standin) if r in item_responses) == sorted(
        [RESPONSES[i][0] for i in ASKED] + [BROKEN])
    assert len(standin.requests) == 8 + 10
    sent = {prompt_of(body): response_of(body) for body in standin.requests}

    judge_fields = ["state", "score", "reason", "raw_reply", "error", "judge_backend",
                    "judge_model", "judge_digest", "judge_template", "prompt_sha256",
                    "judge_seconds", "cached"]
    scored = by_item[85]
    assert list(scored) == list(responses[0]) + judge_fields
    prompt = next(p for p, r in sent.items() if r == RESPONSES[85][0])
    assert {k: scored[k] for k in judge_fields if k != "judge_seconds"} == {
        "state": "scored", "score": 75, "reason": None, "raw_reply": "75", "error": None,
        "judge_backend": "ollama", "judge_model": "llama3:latest", "judge_digest": DIGEST,
        "judge_template": "book",
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(), "cached": False}
    assert isinstance(scored["judge_seconds"], float) and scored["judge_seconds"] >= 0
    assert by_item[88]["raw_reply"] == "eighty" and by_item[88]["score"] is None
    assert by_item[89]["raw_reply"] is None
    assert by_item[89]["error"] == (f"Ollama at {standin.url} answered HTTP 500: model runner "
                                    "crashed (after 2 attempts)")
    for i in (86, 92, 93):  # not asked: no prompt, no reply, no time
        assert {k: by_item[i][k] for k in judge_fields} == {
            "state": "empty", "score": 0, "reason": None, "raw_reply": None, "error": None,
            "judge_backend": "ollama", "judge_model": "llama3:latest", "judge_digest": DIGEST,
            "judge_template": "book", "prompt_sha256": None, "judge_seconds": 0.0,
            "cached": False}
    assert by_item[93]["response"] is None and by_item[93]["stop_reason"] == "missing"

    summary = json.loads((run.root / "judge/summary.json").read_text())
    assert summary.pop("seconds") > 0
    assert summary == {
        "items": 10,
        "states": {"scored": 5, "empty": 3, "unparseable": 1, "error": 1},
        "judge": {"backend": "ollama", "model": "llama3:latest", "digest": DIGEST},
        "template": "book", "structured": False,
        "options": {"seed": 123, "temperature": 0, "num_ctx": 2048},
        "repeats": 1,
        "canaries": {"enabled": True,
                     "good_mean": 100.0,
                     "good": {"scored": 5, "empty": 0, "unparseable": 0, "error": 0},
                     "bad_mean": 0.0,
                     "bad": {"scored": 5, "empty": 0, "unparseable": 0, "error": 0},
                     "failed": False, "why": None},
        "cache_hits": 0,
        "errors": 1,
    }
    manifest = json.loads((run.root / "judge/manifest.json").read_text())
    assert manifest["incomplete"] == "1 error"
    assert set(manifest["outputs"]) == {"scores.jsonl", "canaries.jsonl", "summary.json"}
    assert not (run.root / "judge/scores.partial.jsonl").exists()


def test_canaries(run):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url)
    canaries = read_jsonl(run.root / "judge/canaries.jsonl")
    items = read_jsonl(run.root / "generate/responses.jsonl")
    # For the first five items: the reference output as the response (good), and an
    # empty-looking reply (bad).
    assert [(c["canary"], c["item_id"]) for c in canaries] == [
        (kind, item["id"]) for item in items[:5] for kind in ("good", "bad")]
    for index, canary in enumerate(canaries):
        item = items[index // 2]
        expected_response = item["output"] if canary["canary"] == "good" else \
            ["N/A", "...", "I don't know.", "None", "### Response:"][index // 2]
        assert {k: canary[k] for k in ("instruction", "input", "output", "response")} == {
            "instruction": item["instruction"], "input": item["input"],
            "output": item["output"], "response": expected_response}
        assert canary["state"] == "scored"
        assert canary["score"] == (100 if canary["canary"] == "good" else 0)
        assert canary["judge_digest"] == DIGEST and canary["prompt_sha256"]


def test_no_canaries_still_writes_an_empty_canaries_file(run):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url, "judge.canaries=false")
    assert (run.root / "judge/canaries.jsonl").read_text() == ""
    assert len(standin.requests) == 8  # only the items (the broken one twice)
    summary = json.loads((run.root / "judge/summary.json").read_text())
    assert summary["canaries"] == {
        "enabled": False, "good_mean": None, "bad_mean": None,
        "good": {"scored": 0, "empty": 0, "unparseable": 0, "error": 0},
        "bad": {"scored": 0, "empty": 0, "unparseable": 0, "error": 0},
        "failed": False, "why": None}


# -- a judge that fails its canaries ---------------------------------------------------------------

# fooled_by_canaries: the good canaries (the reference itself) get 100, the bad ones (N/A, ...,
# I don't know., None, ### Response:) 100, 90, 80, 70, 60.
FOOLED_WHY = ("good canaries 100 on average, bad ones 80: the lowest good canary, 100, is not "
              "above the highest bad one, 100")
FOOLED_WARNING = f"the judge failed its canaries ({FOOLED_WHY}); its scores are not meaningful"


def test_a_judge_that_fails_its_canaries_is_flagged(run, capsys):
    with OllamaStandIn(fooled_by_canaries) as standin:
        assert run("evaluate", standin.url) == 0
    out = capsys.readouterr().out.splitlines()
    summary_line = next(i for i, line in enumerate(out) if line.startswith("judge: 10 items"))
    assert out[summary_line:summary_line + 2] == [
        "judge: 10 items: 7 scored, 3 empty, 0 unparseable, 0 error; canaries: good mean 100, "
        "bad mean 80; 0 from the judgment cache",
        f"judge: WARNING: {FOOLED_WARNING}"]
    assert f"aggregate: WARNING: {FOOLED_WARNING}" in out

    judge_summary = json.loads((run.root / "judge/summary.json").read_text())
    assert judge_summary["canaries"] == {
        "enabled": True, "good_mean": 100.0,
        "good": {"scored": 5, "empty": 0, "unparseable": 0, "error": 0},
        "bad_mean": 80.0, "bad": {"scored": 5, "empty": 0, "unparseable": 0, "error": 0},
        "failed": True, "why": FOOLED_WHY}
    summary = json.loads((run.root / "aggregate/summary.json").read_text())
    assert (summary["canaries"]["failed"], summary["canaries"]["why"]) == (True, FOOLED_WHY)
    assert summary["canaries"]["separated"] is False
    markdown = (run.root / "aggregate/summary.md").read_text().splitlines()
    assert markdown[:4] == ["# evalpipe run `r`", "", f"**WARNING: {FOOLED_WARNING}.**", ""]


def test_a_judge_that_passes_its_canaries_is_not_flagged(run, capsys):
    with OllamaStandIn(book_judge) as standin:
        assert run("evaluate", standin.url, "judge.strict_canaries=true") == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out
    for stage in ("judge", "aggregate"):
        canaries = json.loads((run.root / f"{stage}/summary.json").read_text())["canaries"]
        assert (canaries["failed"], canaries["why"]) == (False, None)
    assert "WARNING" not in (run.root / "aggregate/summary.md").read_text()


def test_without_canaries_nothing_fails(run, capsys):
    with OllamaStandIn(fooled_by_canaries) as standin:
        assert run("evaluate", standin.url, "judge.canaries=false",
                   "judge.strict_canaries=true") == 0
    assert "WARNING" not in capsys.readouterr().out
    for stage in ("judge", "aggregate"):
        canaries = json.loads((run.root / f"{stage}/summary.json").read_text())["canaries"]
        assert (canaries["failed"], canaries["why"]) == (False, None)


def test_strict_canaries_writes_the_outputs_then_fails(run, capsys):
    with OllamaStandIn(fooled_by_canaries) as standin:
        assert run("evaluate", standin.url, "judge.strict_canaries=true") == 1
        captured = capsys.readouterr()
        assert captured.err.splitlines()[-1] == (
            f"evalpipe: error: judge: {FOOLED_WARNING}, and judge.strict_canaries is true; "
            "judge/scores.jsonl, canaries.jsonl and summary.json are written and every "
            "judgment is in the judgment cache")
        assert "WARNING" not in captured.out  # the error says it
        # Nothing is lost: the outputs are there, the stage is not done, aggregate did not run.
        assert len(read_jsonl(run.root / "judge/scores.jsonl")) == 10
        assert json.loads((run.root / "judge/summary.json").read_text())["canaries"]["failed"]
        assert not (run.root / "judge/manifest.json").exists()
        assert not (run.root / "judge/scores.partial.jsonl").exists()
        assert not (run.root / "aggregate").exists()

        # Strict off: the judge runs again from the judgment cache, asking nothing.
        before = len(standin.requests)
        assert run("evaluate", standin.url) == 0
        out = capsys.readouterr().out
        assert len(standin.requests) == before
        assert "canaries: good mean 100, bad mean 80; 17 from the judgment cache\n" in out
        assert f"judge: WARNING: {FOOLED_WARNING}\n" in out

        # A judge already done with failed canaries: turning strict on makes the stage stale,
        # and the rerun (from the cache) fails.
        assert status_of(run, capsys, standin.url, "judge.strict_canaries=true")["judge"] == (
            "stale    configuration changed: strict_canaries")
        assert run("judge", standin.url, "judge.strict_canaries=true") == 1
        assert len(standin.requests) == before
        # The failed run left no manifest: the next run judges again (from the cache).
        assert status_of(run, capsys, standin.url)["judge"] == "missing  never run"


def test_options_and_request_shape(run):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url, "judge.canaries=false")
    for body in standin.requests:
        assert body["model"] == "llama3"
        assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
        assert body["stream"] is False
        assert not body.get("format")
        assert [m["role"] for m in body["messages"]] == ["user"]


# -- the cache ---------------------------------------------------------------------------------

def test_a_rerun_asks_the_cache_not_the_judge_but_errors_are_asked_again(run, capsys):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url)
        first = scores(run)
        before = len(standin.requests)
        capsys.readouterr()
        # Speed settings change nothing, but the item in error leaves the judge incomplete.
        assert run("judge", standin.url, "judge.concurrency=2") == 0
        # Only the item that ended in error is asked again (retries + 1 times).
        assert asked(standin, before) == [BROKEN, BROKEN]
    second = scores(run)
    out = capsys.readouterr().out
    assert "judge: running (incomplete: 1 error)" in out
    assert "; 16 from the judgment cache\n" in out
    for i in first:
        if STATES[i] in ("scored", "unparseable"):
            assert second[i]["cached"] is True and second[i]["judge_seconds"] == 0.0
            expected = {k: v for k, v in first[i].items() if k not in ("cached", "judge_seconds")}
            assert {k: v for k, v in second[i].items()
                    if k not in ("cached", "judge_seconds")} == expected
    assert second[89]["state"] == "error" and second[89]["cached"] is False
    assert (run.root.parent / "judge-cache.sqlite").exists()  # shared by every run


def test_a_new_parsing_rule_rereads_cached_replies_without_asking(run, monkeypatch):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url)
        before = len(standin.requests)
        # A changed parsing rule (here: every reply is read as 42) is a code change, not a
        # setting; --force reruns the stage, and the cached raw replies are parsed anew.
        import evalpipe.judging.engine
        from evalpipe.judging.prompts import Parsed

        monkeypatch.setattr(evalpipe.judging.engine, "parse_reply",
                            lambda template, structured, text: Parsed("scored", 42, None))
        run("judge", standin.url, force=True)
        assert asked(standin, before) == [BROKEN, BROKEN]
    by_item = scores(run)
    assert {i: r["score"] for i, r in by_item.items() if STATES[i] in ("scored", "unparseable")} \
        == {85: 42, 87: 42, 88: 42, 90: 42, 91: 42, 94: 42}
    assert by_item[88]["raw_reply"] == "eighty" and by_item[88]["cached"] is True


# -- interruptions, concurrency ------------------------------------------------------------------

def test_a_killed_judge_loses_no_finished_judgment(run, run_env):
    def slow(body):
        time.sleep(0.15)
        return book_judge(body)

    with OllamaStandIn(slow) as standin:
        assert run("generate") == 0
        command = [sys.executable, "-m", "evalpipe", "judge", "--config", SMOKE, "--run", "r",
                   "--set", f"data.source={run_env / 'data.json'}",
                   "--set", f"generate.from_file={run_env / 'responses.json'}",
                   "--set", "generate.allow_partial=true",
                   "--set", f"judge.host={standin.url}", "--set", "judge.concurrency=1"]
        process = subprocess.Popen(command, cwd=run_env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        partial = run.root / "judge/scores.partial.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.read_text().count("\n") >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (run.root / "judge/scores.jsonl").exists()
        assert not (run.root / "judge/manifest.json").exists()
        kept = read_partial_jsonl(partial)  # a line cut short by the kill does not count
        assert len(kept) >= 4
        # The cache would also spare the judge; without it only the partial file can.
        for leftover in run_env.glob("results/judge-cache.sqlite*"):
            leftover.unlink()

        before = len(standin.requests)
        assert run("judge", standin.url) == 0
        # 7 items and 10 canaries need the judge; what the killed run finished is not asked.
        again = asked(standin, before)
        assert len(again) == 17 - len(kept)
        assert not set(again) & {r["response"] for r in kept if r.get("canary") is None}
    assert not partial.exists()
    by_item = scores(run)
    assert list(by_item) == list(range(85, 95))
    assert {i: r["score"] for i, r in by_item.items()} == {
        85: 75, 86: 0, 87: 67, 88: 0, 89: 0, 90: 0, 91: 100, 92: 0, 93: 0, 94: 89}
    assert len(read_jsonl(run.root / "judge/canaries.jsonl")) == 10


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test: a process started in the
    background by a shell without job control (as CI may start the suite) begins with SIGINT
    ignored, and Python then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c() -> None:
    """Ctrl-C as the terminal sends it: a real SIGINT, to the main thread. (interrupt_main only
    sets a flag that a main thread blocked in a wait sees when the wait ends by itself, so under
    load the stage could finish first.)"""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def test_answers_in_flight_at_ctrl_c_reach_the_cache(run, capsys, ctrl_c_raises):
    """Ctrl-C while requests are in flight: the stage waits for them (they end by their
    timeout at the latest), so their answers reach the judgment cache before it is closed,
    and the rerun asks only for what never got an answer."""
    lock = threading.Lock()
    count = [0]
    all_workers_busy = threading.Event()

    def interrupting(body):
        with lock:
            count[0] += 1
            number = count[0]
        if number == 3:
            all_workers_busy.set()
        if number == 2:
            # Ctrl-C once all three workers are under way (a Ctrl-C while the thread pool is
            # still starting its threads is another story), seen by the main thread when it
            # next wakes.
            all_workers_busy.wait(timeout=10)
            time.sleep(0.1)
            ctrl_c()
            time.sleep(0.3)
        elif number > 2:
            time.sleep(0.6)  # still in flight when the main thread stops
        return book_judge(body)  # BROKEN gets a score too: every answer can be cached

    settings = ("judge.concurrency=3", "judge.canaries=false")
    with OllamaStandIn(interrupting) as standin:
        assert run("generate") == 0
        capsys.readouterr()
        assert run("judge", standin.url, *settings) == 130
        assert capsys.readouterr().err.endswith(  # after the progress bar
            "\nevalpipe: interrupted; finished work is kept, rerun to continue\n")
        first = asked(standin)
        assert len(first) >= 3  # the first answer, and at least two in flight at Ctrl-C
        cache = JudgmentCache(run.root.parent / "judge-cache.sqlite")
        assert len(cache) == len(first)  # every answer given was kept
        cache.close()
        assert not (run.root / "judge/scores.jsonl").exists()

        assert run("judge", standin.url, *settings) == 0
        again = asked(standin, len(first))
    responses = {RESPONSES[i][0] for i in ASKED}
    assert sorted(again) == sorted(responses - set(first))
    assert {i: r["score"] for i, r in scores(run).items() if i in ASKED} == {
        85: 75, 87: 67, 88: 0, 89: 0, 90: 0, 91: 100, 94: 89}


def test_ctrl_c_does_not_wait_to_retry(run, monkeypatch, ctrl_c_raises):
    """A request that failed transiently waits (backoff) before its retry; Ctrl-C meanwhile
    ends that wait: the failed request is not sent again, and the stage stops."""
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "60")
    lock = threading.Lock()
    count = [0]

    def fail_then_interrupt(body):
        with lock:
            count[0] += 1
            number = count[0]
        if number == 1:
            return StandInFailure(503, "busy")
        if number == 2:
            time.sleep(0.2)  # the first request is in its backoff by now
            ctrl_c()
        return book_judge(body)

    with OllamaStandIn(fail_then_interrupt) as standin:
        assert run("generate") == 0
        assert run("judge", standin.url, "judge.concurrency=2", "judge.canaries=false") == 130
        first_failed = response_of(standin.requests[0])
        assert asked(standin).count(first_failed) == 1


def test_a_partial_file_from_other_settings_is_not_reused(run):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url)
        # What an interrupted rubric run would have left, were it the same items.
        records = read_jsonl(run.root / "judge/scores.jsonl")
        partial = run.root / "judge/scores.partial.jsonl"
        partial.write_text("".join(json.dumps({**r, "score": 1, "_job": r["id"],
                                               "_run_key": "another run"}) + "\n"
                                   for r in records))
        run("judge", standin.url, force=True)
    assert scores(run)[85]["score"] == 75
    assert not partial.exists()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_the_number_of_requests_in_flight(run, concurrency):
    lock = threading.Lock()
    in_flight, most = [0], [0]

    def counting(body):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return book_judge(body)

    with OllamaStandIn(counting) as standin:
        run("judge", standin.url, f"judge.concurrency={concurrency}")
    assert len(standin.requests) == 17
    assert most[0] == concurrency


# -- settings --------------------------------------------------------------------------------------

def test_structured_mode_sends_the_schema_and_never_clamps(run):
    def replies(body):
        if response_of(body) == UNPARSEABLE:
            return '{"score": 150, "reason": "better than perfect"}'
        return scripted(body)

    with OllamaStandIn(replies) as standin:
        run("judge", standin.url, "judge.structured=true", "judge.canaries=false")
    schema = {"type": "object",
              "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100},
                             "reason": {"type": "string", "maxLength": 200}},
              "required": ["score", "reason"]}
    assert all(body["format"] == schema for body in standin.requests)
    by_item = scores(run)
    assert by_item[85]["state"] == "scored" and by_item[85]["score"] == 75
    assert by_item[85]["reason"] == "word overlap F1 with the correct output is 0.75"
    assert json.loads(by_item[85]["raw_reply"]) == {
        "score": 75, "reason": "word overlap F1 with the correct output is 0.75"}
    assert by_item[88]["state"] == "unparseable" and by_item[88]["score"] is None
    assert by_item[88]["raw_reply"] == '{"score": 150, "reason": "better than perfect"}'


def test_repeats_ask_with_seed_seed_plus_one(run):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url, "judge.repeats=2", "judge.canaries=false")
    sent = sorted((response_of(b), b["options"]["seed"]) for b in standin.requests)
    expected = sorted((RESPONSES[i][0], seed) for i in ASKED for seed in (123, 124))
    assert sent == sorted(expected + [(BROKEN, 123), (BROKEN, 124)])  # retries
    by_item = scores(run)
    assert by_item[85]["repeats"] == [
        {"seed": 123, "state": "scored", "score": 75, "raw_reply": "75"},
        {"seed": 124, "state": "scored", "score": 75, "raw_reply": "75"}]
    assert by_item[86]["repeats"] == [
        {"seed": 123, "state": "empty", "score": 0, "raw_reply": None},
        {"seed": 124, "state": "empty", "score": 0, "raw_reply": None}]
    assert [r["state"] for r in by_item[89]["repeats"]] == ["error", "error"]
    assert by_item[85]["score"] == 75  # the record's own fields are the first repeat's


def test_changing_only_judge_settings_reruns_only_the_judge(run, capsys):
    with OllamaStandIn(scripted) as standin:
        run("judge", standin.url)
        manifests = {stage: (run.root / f"{stage}/manifest.json").read_text()
                     for stage in ("prepare", "generate")}
        capsys.readouterr()
        assert run("judge", standin.url, "judge.template=rubric") == 0
    out = capsys.readouterr().out
    assert "prepare: up to date" in out and "generate: up to date" in out
    assert "judge: running (configuration changed: template)" in out
    for stage, text in manifests.items():
        assert (run.root / f"{stage}/manifest.json").read_text() == text
    # The rubric's 1-5 grades (stand-in: 1 + round(4 F1)) mapped to 0, 25, 50, 75, 100.
    by_item = scores(run)
    assert {i: r["score"] for i, r in by_item.items() if STATES[i] == "scored"} == {
        85: 75, 87: 75, 90: 0, 91: 100, 94: 100}
    assert by_item[85]["raw_reply"] == ("Score: 4\nReason: word overlap F1 with the reference "
                                        "is 0.75")
    assert by_item[85]["reason"] == "word overlap F1 with the reference is 0.75"
    assert by_item[85]["judge_template"] == "rubric"
    capsys.readouterr()
    assert run("status", None, "judge.template=rubric") == 0
    status = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert status["prepare"] == status["generate"] == "done"
    assert status["judge"] == "incomplete"  # item 89 ended in error


def test_an_openai_compatible_server(run, capsys):
    settings = ("judge.backend=openai", "judge.model=judge-8b", "judge.api_key=sk-test",
                "judge.canaries=false")
    # `created` moves on every GET /v1/models, as with vLLM and llama-server.
    with OpenAIStandIn(scripted, models=["judge-8b"], api_key="sk-test",
                       clock=itertools.count(1_700_000_000, 60).__next__) as standin:
        assert run("judge", standin.url, *settings) == 0
        first = scores(run)
        before = len(standin.requests)
        # The same judge model: a rerun finds every finished judgment in the cache.
        assert run("judge", standin.url, *settings, force=True) == 0
        assert asked(standin, before) == [BROKEN, BROKEN]
        # ... and the stage cache sees the same digest: incomplete (item 89), not stale.
        assert status_of(run, capsys, standin.url, *settings)["judge"] == "incomplete 1 error"
    assert {(b["seed"], b["temperature"]) for b in standin.requests} == {(123, 0)}
    assert {i: r["state"] for i, r in first.items()} == STATES
    assert first[91]["score"] == 100
    assert (first[91]["judge_backend"], first[91]["judge_model"],
            first[91]["judge_digest"]) == ("openai", "judge-8b", "judge-8b/system")
    assert {i for i, r in scores(run).items() if r["cached"]} == {85, 87, 88, 90, 91, 94}


def test_several_hosts_share_the_work(run):
    with OllamaStandIn(scripted) as first, OllamaStandIn(scripted) as second:
        assert run("judge", None, f'judge.hosts=["{first.url}", "{second.url}"]') == 0
        assert first.requests and second.requests
        assert len(first.requests) + len(second.requests) == 18
    assert {i: r["state"] for i, r in scores(run).items()} == STATES


# -- what makes the judge stale besides its settings: who judges, the prompt, the parsing rule --

NEW_DIGEST = hashlib.sha256(b"llama3 pulled again").hexdigest()


def status_of(run, capsys, url, *settings) -> dict[str, str]:
    """`evalpipe status` by stage: the rest of each line after the stage's name."""
    capsys.readouterr()
    assert run("status", url, *settings) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    return {line.split()[0]: line.split(None, 1)[1] for line in lines}


def test_a_new_digest_makes_the_judge_stale_and_asks_everything_again(run, capsys):
    with OllamaStandIn() as standin:
        assert run("judge", standin.url) == 0
        manifest = json.loads((run.root / "judge/manifest.json").read_text())
        assert manifest["identity"]["digest"] == DIGEST
        assert manifest["incomplete"] is None
        assert status_of(run, capsys, standin.url)["judge"].startswith("done     finished ")
        standin.models["llama3:latest"] = NEW_DIGEST  # `ollama pull llama3` got new weights
        reason = f"digest changed: {DIGEST[:12]} -> {NEW_DIGEST[:12]}"
        assert status_of(run, capsys, standin.url)["judge"] == f"stale    {reason}"
        before = len(standin.requests)
        assert run("judge", standin.url) == 0
        assert f"judge: running ({reason})" in capsys.readouterr().out
        assert len(standin.requests) - before == 7 + 10  # the items with a response, canaries
        assert {r["judge_digest"] for r in scores(run).values()} == {NEW_DIGEST}
        assert status_of(run, capsys, standin.url)["judge"].startswith("done     finished ")


def test_a_changed_prompt_text_makes_the_judge_stale(run, capsys, monkeypatch):
    import evalpipe.judging.prompts
    from evalpipe.judging.prompts import template_sha256

    with OllamaStandIn() as standin:
        assert run("judge", standin.url) == 0
        old = template_sha256("book", False)
        monkeypatch.setattr(evalpipe.judging.prompts, "BOOK_FREE_TEXT_ENDING",
                            "Respond with the score only.")
        new = template_sha256("book", False)
        assert status_of(run, capsys, standin.url)["judge"] == (
            f"stale    prompt_template changed: {old[:12]} -> {new[:12]}")
        before = len(standin.requests)
        assert run("judge", standin.url) == 0
        assert len(standin.requests) - before == 7 + 10  # new prompts: nothing is cached
        assert prompt_of(standin.requests[-1]).endswith("Respond with the score only.")


def test_a_new_parse_rule_version_makes_the_judge_stale_and_rereads_the_cache(
        run, capsys, monkeypatch):
    import evalpipe.judging.engine
    import evalpipe.judging.prompts
    from evalpipe.judging.prompts import Parsed

    with OllamaStandIn() as standin:
        assert run("judge", standin.url) == 0
        version = evalpipe.judging.prompts.PARSE_RULE_VERSION
        monkeypatch.setattr(evalpipe.judging.prompts, "PARSE_RULE_VERSION", version + 1)
        monkeypatch.setattr(evalpipe.judging.engine, "parse_reply",
                            lambda template, structured, text: Parsed("scored", 42, None))
        assert status_of(run, capsys, standin.url)["judge"] == (
            f"stale    parse_rule changed: {version} -> {version + 1}")
        before = len(standin.requests)
        assert run("judge", standin.url) == 0
        assert len(standin.requests) == before  # the cached replies, parsed anew
    assert {r["score"] for r in scores(run).values() if r["state"] == "scored"} == {42}


def test_a_judge_server_that_is_down_leaves_the_digest_unchecked(run, capsys):
    with OllamaStandIn() as standin:
        assert run("judge", standin.url) == 0
        url = standin.url
    # Stopped: status does not guess whether the model is still the same.
    line = status_of(run, capsys, url)["judge"]
    assert line.startswith("done     finished ")
    assert line.endswith(f"; digest not checked: judge server unreachable (cannot reach Ollama "
                         f"at {url}: is it running? start it with 'ollama serve')")
    # Everything else being up to date, the results are kept, and the output says the digest
    # was not checked.
    assert run("evaluate", url) == 0
    out = capsys.readouterr().out
    assert "judge: up to date (finished " in out
    assert "; digest not checked: judge server unreachable (" in out
    assert "aggregate: running (never run)" in out


def test_swap_and_mode_do_not_make_a_single_mode_judge_stale(run, capsys):
    with OllamaStandIn() as standin:
        assert run("judge", standin.url) == 0
        assert status_of(run, capsys, standin.url, "judge.swap=true")["judge"].startswith(
            "done     finished ")
        before = len(standin.requests)
        capsys.readouterr()
        assert run("judge", standin.url, "judge.swap=true") == 0
        assert "judge: up to date (finished " in capsys.readouterr().out
        assert len(standin.requests) == before


# -- an incomplete judge: items in error ---------------------------------------------------------

def test_items_in_error_leave_the_judge_incomplete_until_they_are_answered(run, capsys):
    with OllamaStandIn(scripted) as standin:
        assert run("judge", standin.url) == 0
        status = status_of(run, capsys, standin.url)
        assert status["judge"] == "incomplete 1 error"
        assert status["aggregate"] == "missing  never run"
        # aggregate runs on what there is, and says the judge is incomplete
        assert run("aggregate", standin.url) == 0
        out = capsys.readouterr().out
        assert "judge: running (incomplete: 1 error)" in out
        assert ("aggregate: judge incomplete: 1 error: the judgments in error are left out of "
                "the numbers; 'evalpipe judge' asks for them again\n") in out
        summary = json.loads((run.root / "aggregate/summary.json").read_text())
        assert summary["judge_incomplete"] == "judge incomplete: 1 error"
        assert "**judge incomplete: 1 error**" in (run.root / "aggregate/summary.md").read_text()
        assert ('<p class="note" data-key="judge_incomplete" data-value="&quot;judge '
                'incomplete: 1 error&quot;">judge incomplete: 1 error') in (
                    run.root / "aggregate/report.html").read_text()
        assert status_of(run, capsys, standin.url)["aggregate"] == "stale    judge is incomplete"

        # The server is mended: only the item in error is asked, the rest is in the cache.
        standin.reply = book_judge
        before = len(standin.requests)
        assert run("evaluate", standin.url) == 0
        out = capsys.readouterr().out
        assert "judge: running (incomplete: 1 error)" in out
        assert asked(standin, before) == [BROKEN]
        assert "; 16 from the judgment cache\n" in out
        assert "aggregate: running (input judge/scores.jsonl" in out
        assert "judge incomplete" not in out
    assert scores(run)[89]["state"] == "scored"
    summary = json.loads((run.root / "aggregate/summary.json").read_text())
    assert summary["judge_incomplete"] is None
    status = status_of(run, capsys, unused_url())
    assert status["judge"].startswith("done     finished ")
    assert status["aggregate"].startswith("done     finished ")


def test_a_canary_in_error_leaves_the_judge_incomplete_too(run, capsys):
    def canaries_broken(body):
        if response_of(body) == "N/A":
            return StandInFailure(500, "model runner crashed")
        return book_judge(body)

    with OllamaStandIn(canaries_broken) as standin:
        assert run("judge", standin.url) == 0
        assert status_of(run, capsys, standin.url)["judge"] == "incomplete 1 error"
        standin.reply = book_judge
        before = len(standin.requests)
        assert run("judge", standin.url) == 0
        assert asked(standin, before) == ["N/A"]
        assert status_of(run, capsys, standin.url)["judge"].startswith("done ")


def test_a_judge_host_stopped_mid_run_leaves_its_work_to_the_others(run):
    """Three hosts; the second stops while answering its second request. Every item is judged,
    and only the requests it had in flight are asked again (of the others)."""
    hosts = []

    def stops_at_second(body):
        if len(hosts[1].requests) == 2:
            hosts[1].stop()  # cuts this request's connection too: it gets no answer
        return book_judge(body)

    settings = ("judge.canaries=true", "judge.concurrency=4")
    with OllamaStandIn(book_judge) as first, OllamaStandIn(stops_at_second) as second, \
            OllamaStandIn(book_judge) as third:
        hosts += [first, second, third]
        assert run("judge", None, f'judge.hosts=["{first.url}", "{second.url}", '
                                  f'"{third.url}"]', *settings) == 0
    prompts = Counter(prompt_of(b) for host in hosts for b in host.requests)
    unanswered = {prompt_of(b) for b in second.requests[1:]}
    assert len(second.requests) >= 2 and first.requests and third.requests
    assert {p for p, n in prompts.items() if n > 1} <= unanswered
    assert max(prompts.values()) <= 2
    assert len(prompts) == 7 + 10  # every item with a response, every canary
    expected = {i: s if i != 89 else "scored" for i, s in STATES.items()}
    expected[88] = "scored"  # book_judge scores every response
    assert {i: r["state"] for i, r in scores(run).items()} == expected


# -- prompt sizes: no silent truncation ---------------------------------------------------------

def with_response(run, item: int, response: str) -> None:
    """Import `response` as item `item`'s response instead of RESPONSES' one."""
    path = run.root.parent.parent / "responses.json"
    records = json.loads(path.read_text())
    for record in records:
        if record["instruction"] == f"Task {item}":
            record["model_response"] = response
    path.write_text(json.dumps(records))


def sent_for(standin, response: str) -> list[dict]:
    return [b for b in standin.requests if response_of(b) == response]


def test_a_long_prompt_gets_a_larger_context_where_the_model_allows(run):
    long = " ".join(f"word85a{n}" for n in range(700))  # about 2,100 tokens by the estimate
    with_response(run, 85, long)
    with OllamaStandIn(scripted) as standin:
        assert run("judge", standin.url, "judge.canaries=false") == 0
    (body,) = sent_for(standin, long)
    assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 4096}
    assert {b["options"]["num_ctx"] for b in standin.requests if b is not body} == {2048}
    assert scores(run)[85]["state"] == "scored"


def test_a_prompt_longer_than_the_model_takes_stops_before_asking(run, capsys):
    from evalpipe.judging.engine import estimate_tokens
    from evalpipe.judging.prompts import render

    long = " ".join(f"word85a{n}" for n in range(700))
    with_response(run, 85, long)
    with OllamaStandIn(scripted, context_length=2048) as standin:
        assert run("judge", standin.url, "judge.canaries=false") == 1
        assert standin.requests == []
    record = next(r for r in read_jsonl(run.root / "generate/responses.jsonl")
                  if r["response"] == long)
    prompt = render("book", record)
    assert capsys.readouterr().err == (
        f"evalpipe: error: judge: item {record['id']}: the prompt needs a context of about "
        f"{estimate_tokens(prompt) + 512} tokens ({estimate_tokens(prompt)} for the prompt, "
        f"estimated from {len(prompt.encode())} bytes, 512 for the reply), but "
        "judge.options.num_ctx is 2048 and the judge llama3:latest takes at most 2048\n")
    assert not (run.root / "judge/scores.jsonl").exists()


# Punctuation-heavy: more tokens than the estimate (UTF-8 bytes / 3) allows for, so the prompt
# is sent with num_ctx 2048 and the stand-in, like Ollama, cuts it without a word.
DOTS = " ".join(["x."] * 1200)


@pytest.mark.parametrize("cut, message", [
    ("half", "prompt truncated: the judge read 1026 tokens of a prompt of {words} words "
             "(num_ctx 2048)"),
    ("whole", "prompt truncated: the judge read 2048 tokens, its whole context (num_ctx 2048), "
              "leaving no room for the reply"),
])
def test_a_truncated_prompt_is_an_error_and_not_cached(run, cut, message):
    with_response(run, 85, DOTS)
    with OllamaStandIn(scripted, cut=cut) as standin:
        assert run("judge", standin.url, "judge.canaries=false") == 0
        (body,) = sent_for(standin, DOTS)
        assert body["options"]["num_ctx"] == 2048
        record = scores(run)[85]
        assert (record["state"], record["score"], record["raw_reply"]) == ("error", None, None)
        assert record["error"] == message.format(words=len(prompt_of(body).split()))
        # Not cached: a rerun asks again (and the finished items come from the cache).
        before = len(standin.requests)
        assert run("judge", standin.url, "judge.canaries=false", force=True) == 0
        assert sorted(asked(standin, before)) == sorted([BROKEN, BROKEN, DOTS])
    assert scores(run)[85]["state"] == "error"


def test_a_truncated_prompt_on_an_openai_compatible_server_is_an_error(run):
    with_response(run, 85, DOTS)
    settings = ("judge.backend=openai", "judge.model=judge-8b", "judge.canaries=false")
    with OpenAIStandIn(scripted, models=["judge-8b"], context=2048) as standin:
        assert run("judge", standin.url, *settings) == 0
        (body,) = sent_for(standin, DOTS)
    assert scores(run)[85]["error"] == (
        f"prompt truncated: the judge read 1026 tokens of a prompt of "
        f"{len(prompt_of(body).split())} words (num_ctx not sent)")
    assert scores(run)[87]["state"] == "scored"


def test_cached_replies_that_cannot_be_checked_are_asked_again(run):
    with OllamaStandIn(scripted) as standin:
        assert run("judge", standin.url, "judge.canaries=false") == 0
        cache = sqlite3.connect(run.root.parent / "judge-cache.sqlite")
        stored = dict(cache.execute("SELECT raw, prompt_tokens FROM replies"))
        assert stored["75"] > len(RESPONSES[85][0].split()) and stored["67"] > 0
        # Stored before the counts were kept (checked 0), and a count that says "cut".
        cache.execute("UPDATE replies SET checked = 0 WHERE raw = '75'")
        cache.execute("UPDATE replies SET prompt_tokens = 3 WHERE raw = '67'")
        cache.commit()
        cache.close()
        before = len(standin.requests)
        assert run("judge", standin.url, "judge.canaries=false", force=True) == 0
        assert sorted(asked(standin, before)) == sorted(
            [RESPONSES[85][0], RESPONSES[87][0], BROKEN, BROKEN])
    assert {i: r["cached"] for i, r in scores(run).items() if i in ASKED} == {
        85: False, 87: False, 88: True, 89: False, 90: True, 91: True, 94: True}


def test_the_truncation_rule():
    from evalpipe.judging.engine import truncation

    prompt = "one two three four"
    assert truncation(prompt, Reply("85", None, 2048)) is None  # no count: nothing to check
    assert truncation(prompt, Reply("85", 4, 2048)) is None
    assert truncation(prompt, Reply("85", 3, None)) == (
        "prompt truncated: the judge read 3 tokens of a prompt of 4 words (num_ctx not sent)")
    assert truncation(prompt, Reply("85", 8, 8)) == (
        "prompt truncated: the judge read 8 tokens, its whole context (num_ctx 8), leaving no "
        "room for the reply")
    assert truncation(prompt, Reply("85", 7, 8)) is None


def test_num_ctx_is_doubled_up_to_the_model_context_and_no_further():
    from types import SimpleNamespace

    from evalpipe.judging.engine import estimate_tokens, sized_options

    judge = SimpleNamespace(backend=SimpleNamespace(max_context=8192),
                            identity=JudgeIdentity("ollama", "llama3:latest", "d"))
    prompt = "x" * 3 * (4000 - 32)  # estimated at 4000 tokens, + 512 for the reply
    assert estimate_tokens(prompt) == 4000
    assert sized_options(judge, prompt, {"num_ctx": 2048}, "item 1") == {"num_ctx": 8192}
    assert sized_options(judge, prompt, {"num_ctx": 2048, "num_predict": 96}, "item 1") == {
        "num_ctx": 4096, "num_predict": 96}  # 4000 + 96 fit in 4096
    assert sized_options(judge, prompt[:6000], {}, "item 1") == {"num_ctx": 4096}
    # A num_ctx above the model's is capped by Ollama: what counts is the model's.
    assert sized_options(judge, prompt, {"num_ctx": 16384}, "item 1") == {"num_ctx": 16384}
    with pytest.raises(EvalpipeError) as caught:
        sized_options(judge, prompt * 2, {"num_ctx": 16384}, "item 1")
    assert str(caught.value).startswith("judge: item 1: the prompt needs a context of about "
                                        "8480 tokens (7968 for the prompt")
    judge.backend.max_context = None  # OpenAI-style: the server's context, sent as it is
    assert sized_options(judge, prompt * 2, {"num_ctx": 2048}, "item 1") == {"num_ctx": 2048}


def test_a_cache_from_before_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, raw TEXT NOT NULL, backend TEXT, "
                "model TEXT, created TEXT)")
    old.execute("INSERT INTO replies VALUES ('k', '85', 'ollama', 'llama3', '2026-01-01')")
    old.commit()
    old.close()
    cache = JudgmentCache(path)
    assert cache.get("k") is None  # cannot be checked: asked again
    cache.put("k", Reply("90", 120, 2048), JudgeIdentity("ollama", "llama3", "d"))
    assert cache.get("k") == Reply("90", 120, 2048)
    cache.close()


# -- failures before the first item -----------------------------------------------------------

def test_a_judge_server_that_is_down_is_one_line(run, capsys):
    url = unused_url()
    assert run("judge", url) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: judge: cannot reach Ollama at {url}: is it running? "
        "start it with 'ollama serve'\n")
    assert not (run.root / "judge/scores.jsonl").exists()
    assert not (run.root / "judge/manifest.json").exists()


def test_a_missing_model_is_one_line(run, capsys):
    """With judge.pull = false (tests/judging/test_pull.py: the default pulls it)."""
    with OllamaStandIn(scripted, models={"mistral:latest": "0" * 64}) as standin:
        assert run("judge", standin.url, "judge.pull=false") == 1
        assert standin.requests == []
    assert capsys.readouterr().err == (
        f"evalpipe: error: judge: Ollama at {standin.url} has no model 'llama3': "
        "run 'ollama pull llama3'\n")
    assert not (run.root / "judge/manifest.json").exists()


@pytest.mark.parametrize("record, message", [
    ({"id": "a", "instruction": "i", "input": "", "output": "o"},
     "record 1: field 'response' is missing"),
    ({"instruction": "i", "input": "", "output": "o", "response": "r"},
     "record 1: field 'id' is missing"),
    ({"id": "a", "instruction": "i", "input": "", "output": "o", "response": 85},
     "record 1: field 'response' must be a string or null, got int"),
])
def test_responses_the_judge_cannot_read_are_one_line_naming_the_record(tmp_path, record,
                                                                        message):
    good = {"id": "z", "instruction": "i", "input": "", "output": "o", "response": None}
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as caught:
        read_responses(path)
    assert str(caught.value) == f"{path}: {message}"
    path.write_text(json.dumps(good) + "\n")
    assert read_responses(path) == [good]


def test_together_mode_belongs_to_compare(run, capsys):
    assert run("judge", "http://127.0.0.1:1", "judge.mode=together") == 1
    assert capsys.readouterr().err == (
        "evalpipe: error: judge.mode = 'together' judges several runs at once: use "
        "'evalpipe compare'\n")


def test_the_llamacpp_digest_is_read_without_loading_the_model(tmp_path):
    """status must not load an 8B GGUF to learn its digest: the file's SHA-256 is the digest
    the llamacpp backend's preflight reports."""
    from evalpipe.config import JudgeConfig
    from evalpipe.judging.engine import served_digest
    from evalpipe.manifest import Unchecked

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF not really")
    settings = JudgeConfig(backend="llamacpp", model=str(gguf))
    assert served_digest(settings) == hashlib.sha256(b"GGUF not really").hexdigest()
    gguf.unlink()
    assert served_digest(settings) == Unchecked(f"GGUF file not found: {gguf}")


# -- expected scores (judge.scoring = "expected") ---------------------------------------------

def spread_judge(body: dict):
    """The book judge, except that item 85's score token (75) comes with candidates: 75 at
    0.5, 90 at 0.3, 60 at 0.2 (Ollama and OpenAI send them when asked for logprobs)."""
    if response_of(body) == RESPONSES[85][0]:
        return WithLogprobs([("75", [("75", math.log(0.5)), ("90", math.log(0.3)),
                                     ("60", math.log(0.2))])])
    return scripted(body)


@pytest.mark.parametrize("standin_type", [OllamaStandIn, OpenAIStandIn])
def test_expected_scoring_weights_the_score_by_its_probabilities(run, capsys, standin_type):
    settings = ["judge.scoring=expected"]
    if standin_type is OpenAIStandIn:
        settings += ["judge.backend=openai", "judge.model=gpt-4o-mini"]
    with standin_type(spread_judge) as standin:
        assert run("evaluate", standin.url, *settings) == 0
        first = scores(run)
        before = len(standin.requests)
        assert run("judge", standin.url, *settings, force=True) == 0
        assert asked(standin, before) == [BROKEN, BROKEN]  # the rest: from the cache
    assert {(b["logprobs"], b["top_logprobs"]) for b in standin.requests} == {(True, 20)}
    fields = ("score", "integer_score", "expected_score", "score_distribution", "scoring")
    assert {f: first[85][f] for f in fields} == {
        "score": 77, "integer_score": 75, "expected_score": 76.5,  # 37.5 + 27 + 12
        "score_distribution": {"60": 0.2, "75": 0.5, "90": 0.3}, "scoring": "expected"}
    assert {f: first[87][f] for f in fields} == {  # a certain reply
        "score": 67, "integer_score": 67, "expected_score": 67.0,
        "score_distribution": {"67": 1.0}, "scoring": "expected"}
    for item in (86, 88, 89):  # empty, unparseable, error: no score to weigh
        assert {f: first[item][f] for f in fields[1:]} == dict.fromkeys(fields[1:])
    again = scores(run)
    assert {i: {f: again[i][f] for f in fields} for i in again} == \
        {i: {f: first[i][f] for f in fields} for i in first}  # recomputed from the cache
    assert json.loads((run.root / "judge/summary.json").read_text())["scoring"] == \
        {"expected": 5}
    assert "judge.scoring = 'expected', but" not in capsys.readouterr().out
    summary = json.loads((run.root / "aggregate/summary.json").read_text())
    scored = [first[i]["score"] for i in first if STATES[i] in ("scored", "empty")]
    assert summary["score"]["mean"] == sum(scored) / len(scored)  # aggregate reads `score`


def test_expected_scoring_without_logprobs_keeps_the_integer_reply(run, capsys):
    with OllamaStandIn(spread_judge, logprobs=False) as standin:
        run("judge", standin.url, "judge.scoring=expected", "judge.canaries=false")
    assert ("judge: judge.scoring = 'expected', but 5 items scored integer (no logprobs) "
            '(docs/judge.md, "Expected scores")') in capsys.readouterr().out.splitlines()
    summary = json.loads((run.root / "judge/summary.json").read_text())
    assert summary["scoring"] == {"integer (no logprobs)": 5}
    by_item = scores(run)
    assert {i: (r["score"], r["scoring"], r["expected_score"], r["score_distribution"])
            for i, r in by_item.items() if STATES[i] == "scored"} == {
        i: (RESPONSES[i][1], "integer (no logprobs)", None, None) for i in (85, 87, 90, 91, 94)}


def test_expected_scoring_is_part_of_the_judge_config_key(run, capsys):
    with OllamaStandIn(book_judge) as standin:
        run("judge", standin.url, "judge.canaries=false")
        capsys.readouterr()
        assert run("judge", standin.url, "judge.canaries=false", "judge.scoring=integer") == 0
        assert "judge: up to date" in capsys.readouterr().out  # integer: the default
        assert run("judge", standin.url, "judge.canaries=false",
                   "judge.scoring=expected") == 0
    assert "judge: running (configuration changed: scoring)" in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [
    (["judge.scoring=mean"],
     "judge.scoring: expected one of 'integer', 'expected', got 'mean'"),
    (["judge.scoring=expected", "judge.mode=together"],
     "judge.scoring: 'expected' works with judge.mode = 'single' only"),
])
def test_a_bad_scoring_setting_is_one_line(run, capsys, setting, message):
    assert run("judge", None, *setting) == 1
    assert message in capsys.readouterr().err


# Repeats against a noisy judge: for each item the judge's probabilities for the score are
# fixed (the book score c: c-10, c-5, c, c+5, c+10 at 0.1, 0.2, 0.4, 0.2, 0.1, those off
# 0..100 left out), and the integer it writes is drawn from them, seeded by the request's seed.
# So the log-probabilities at the score token are the same on every repeat -- as on a real
# judge when the tokens before the score are (the book prompt's reply is the number alone).
NOISE = ((-10, 0.1), (-5, 0.2), (0, 0.4), (5, 0.2), (10, 0.1))


def noisy_judge(body: dict):
    answer = book_judge(body)
    if isinstance(answer, StandInFailure) or not answer.isdigit():
        return answer
    centre = int(answer)
    candidates = [(str(centre + step), p) for step, p in NOISE if 0 <= centre + step <= 100]
    draw = random.Random(f"{body['options']['seed']}:{prompt_of(body)}")
    written = draw.choices([c for c, _ in candidates], [p for _, p in candidates])[0]
    return WithLogprobs([(written, [(c, math.log(p)) for c, p in candidates])])


def spread(records: dict[int, dict], field: str) -> float:
    """The mean over the scored items of the standard deviation of `field` over the repeats."""
    return statistics.mean(statistics.pstdev(r[field] for r in record["repeats"])
                           for record in records.values() if record["state"] == "scored")


def test_expected_scores_do_not_spread_over_repeats_as_sampled_integers_do(run):
    """The figure in docs/judge.md, "Expected scores": 5 repeats of the 5 scored items."""
    with OllamaStandIn(noisy_judge) as standin:
        run("judge", standin.url, "judge.scoring=expected", "judge.repeats=5",
            "judge.canaries=false")
    by_item = scores(run)
    integer, expected = spread(by_item, "integer_score"), spread(by_item, "expected_score")
    print(f"per-item standard deviation over 5 repeats: integer {integer:.2f}, "
          f"expected {expected:.2f}")
    assert (round(integer, 2), expected, spread(by_item, "score")) == (3.91, 0.0, 0.0)
    # The expected score is the distribution's mean: item 85 (c = 75) gets 75 exactly, item
    # 91 (c = 100) the mean of 100, 95, 90 renormalised over 0.7: 68 / 0.7 = 97.14 (score 97).
    assert [(r["expected_score"], r["score"]) for r in by_item[91]["repeats"]] == \
        [(97.1429, 97)] * 5
    assert {r["expected_score"] for r in by_item[85]["repeats"]} == {75.0}


def test_a_new_expected_rule_version_makes_the_judge_stale_and_rereads_the_cache(
        run, capsys, monkeypatch):
    import evalpipe.judging.expected

    settings = ("judge.scoring=expected", "judge.canaries=false")
    with OllamaStandIn(spread_judge) as standin:
        assert run("judge", standin.url, *settings) == 0
        version = evalpipe.judging.expected.EXPECTED_RULE_VERSION
        monkeypatch.setattr(evalpipe.judging.expected, "EXPECTED_RULE_VERSION", version + 1)
        assert status_of(run, capsys, standin.url, *settings)["judge"] == (
            f"stale    expected_rule changed: {version} -> {version + 1}")
        before = len(standin.requests)
        assert run("judge", standin.url, *settings) == 0
        assert asked(standin, before) == [BROKEN, BROKEN]  # the rest: cached replies reread
    assert scores(run)[85]["expected_score"] == 76.5
