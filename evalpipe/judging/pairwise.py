"""Judging models two at a time (`judge.mode = "pairwise"`), for `evalpipe compare --mode
pairwise` and for a config with several `model.bases`.

Scores given one model at a time drift with the judge's mood; scores given together
(evalpipe/judging/together.py) still move when a model joins or leaves the prompt. Here, as in
Arena-Hard, Chatbot Arena and MT-Bench's pairwise mode, the judge only ever compares two
responses to the same item (evalpipe/judging/prompts.py, `render_pairwise`: the task, the reference
answer, Response A, Response B) and answers one verdict of A>>B, A>B, A=B, B>A, B>>A as JSON
(`pairwise_schema`, sent to every backend). The verdicts are fitted into Bradley-Terry ratings
by evalpipe/stats/bradley_terry.py, in `evalpipe compare`.

What is asked (`plan_questions`): for every test item and every pair of models
(`judge.pairs = "all"`, the pairs in the order the runs are named), or every model with the
anchor run (`judge.pairs = "anchor"`, `judge.anchor = RUN`), one question per order: the first
model's response shown as Response A, then the other way round. The verdict is recorded as the
judge said it, about the order shown; stats.bradley_terry reads the two orders together
(a verdict that flips with the order is a tie, MT-Bench's rule).

Every question goes through the judgment cache (evalpipe/judging/cache.py): its prompt holds only
the item and the two responses, so a question asked once is never asked again. Adding a model
to a comparison asks exactly its new pairs x items x 2 orders; a rerun asks nothing.

Empty or missing responses are not shown to the judge (state `empty`, nothing asked): the
model that answered wins strongly (A>>B or B>>A: an empty response is a failure, as the single
mode's score 0 says); two empty responses are a tie (A=B). These verdicts count in the fit.

A reply that holds no verdict is `unparseable` and a failed request `error`: neither is ever
counted as a tie or dropped without a word. summary.json counts the states, compare says how
many questions were left out of the fit, and, as in together mode, the outputs get no manifest
while a question ended in error: the next run asks exactly those again (the rest comes from
the cache); an unparseable reply is the judge's answer and stays (it is cached).

Outputs, in results/compare-<name>/pairwise/ (the kill-safety and freshness of together mode):
  questions.jsonl  one record per question, in plan order: item, first, second, verdict,
                   reason, raw reply, state, both responses' token counts (GPT-2 tokens)
  summary.json     states, requests and cache hits, who judged
  manifest.json    settings, the responses' hashes, the judge's identity (digest, a hash of
                   the pairwise prompt, the parse rule's version): when it matches, nothing runs
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from evalpipe.config import JudgeConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import read_jsonl, sha256_file, sha256_json, write_json, write_jsonl
from evalpipe.judging import prompts
from evalpipe.judging.engine import (
    answering,
    is_empty,
    open_judge,
    prompt_hash,
    resume,
    served_digest,
    sized_options,
    write_down,
)
from evalpipe.judging.prompts import (
    pairwise_schema,
    pairwise_template_sha256,
    parse_pairwise,
    render_pairwise,
)
from evalpipe.judging.together import MANIFEST, Contender, freshness, load_contenders
from evalpipe.stats.bradley_terry import Question
from evalpipe.templates import encode

FOLDER = "pairwise"
QUESTIONS = "questions.jsonl"
PARTIAL = "questions.partial.jsonl"
SUMMARY = "summary.json"
# judged: a verdict read from the reply; empty: decided without asking (an empty response);
# unparseable: no verdict in the reply; error: no reply. The first two are fitted.
STATES = ("judged", "empty", "unparseable", "error")
FITTED = ("judged", "empty")


class PairwiseError(EvalpipeError):
    """Runs or settings the pairwise judge cannot work with; the message names them."""


@dataclass(frozen=True)
class Ask:
    """One question: item `index`, `first` shown as Response A, `second` as Response B."""

    index: int
    first: str
    second: str

    @property
    def key(self) -> str:
        return f"{self.index}:{self.first}:{self.second}"


def model_pairs(runs: list[str], settings: JudgeConfig) -> list[tuple[str, str]]:
    """The pairs to judge: all of them, in the order the runs are named, or each run with the
    anchor (anchor first). PairwiseError when judge.anchor is not one of the runs."""
    if settings.anchor and settings.anchor not in runs:
        raise PairwiseError(f"judge.anchor = {settings.anchor!r} is not one of the runs "
                            f"compared ({', '.join(runs)})")
    if settings.pairs == "anchor":
        return [(settings.anchor, run) for run in runs if run != settings.anchor]
    return list(itertools.combinations(runs, 2))


def plan_questions(runs: list[str], settings: JudgeConfig, items: int) -> list[Ask]:
    """Every question, item by item, each pair in both orders."""
    pairs = model_pairs(runs, settings)
    return [ask for index in range(items) for a, b in pairs
            for ask in (Ask(index, a, b), Ask(index, b, a))]


def question_record(ask: Ask, item_id: str, first_tokens: int, second_tokens: int,
                    **fields) -> dict:
    """One line of questions.jsonl (docs/compare.md)."""
    record = {"index": ask.index, "id": item_id, "first": ask.first, "second": ask.second,
              "state": "empty", "verdict": None, "reason": None, "problem": None,
              "raw_reply": None, "error": None, "first_tokens": first_tokens,
              "second_tokens": second_tokens, "prompt_sha256": None, "judge_seconds": 0.0,
              "cached": False}
    record.update(fields)
    return record


def empty_verdict(first_empty: bool, second_empty: bool) -> str:
    """The verdict on a question with an empty response, decided without asking: the one that
    answered wins strongly; two empty ones tie."""
    if first_empty and second_empty:
        return "A=B"
    return "B>>A" if first_empty else "A>>B"


def ask_question(judge, settings: JudgeConfig, prompt: str, options: dict, base: dict) -> dict:
    """Ask one question (cache, retries: Judge.ask) and read the reply; a worker thread."""
    answer = judge.ask(prompt, options, pairwise_schema())
    asked = {**base, "prompt_sha256": prompt_hash(prompt), "judge_seconds": answer.seconds,
             "cached": answer.cached}
    if answer.error is not None:
        return {**asked, "state": "error", "error": answer.error}
    parsed = parse_pairwise(answer.raw)
    return {**asked, "state": parsed.state, "verdict": parsed.verdict,
            "reason": parsed.reason, "problem": parsed.problem, "raw_reply": answer.raw}


# -- freshness -------------------------------------------------------------------------------

def pairwise_key(settings: JudgeConfig, contenders: list[Contender]) -> dict:
    """The settings and responses the questions depend on (the judge's identity is apart)."""
    judge = {"backend": settings.backend, "model": settings.model,
             "options": settings.options, "pairs": settings.pairs}
    if settings.pairs == "anchor":  # with all pairs the anchor only places the scale
        judge["anchor"] = settings.anchor
    return {"judge": judge, "responses": {c.label: sha256_file(c.path) for c in contenders}}


def pairwise_rules() -> dict:
    return {"prompt_template": pairwise_template_sha256(),
            "parse_rule": prompts.PAIRWISE_PARSE_RULE_VERSION}


def pairwise_identity(settings: JudgeConfig) -> dict:
    """The judge's identity now: the served digest (Unchecked when it cannot tell) and
    pairwise_rules."""
    return {"digest": served_digest(settings), **pairwise_rules()}


OUTPUTS = [QUESTIONS, SUMMARY]


def pairwise_freshness(out: Path, settings: JudgeConfig, runs: list[str],
                       results: Path) -> tuple[str, str]:
    """("done" | "stale" | "missing", why) of the pairwise judgment of `runs` in `out`."""
    contenders = load_contenders(results, runs)
    return freshness(out, pairwise_key(settings, contenders), OUTPUTS,
                     pairwise_identity(settings), "never judged pairwise")


# -- judging -------------------------------------------------------------------------------------

def judge_pairwise(config: RunConfig, results: str | Path, runs: list[str], out: Path) -> dict:
    """Judge the runs' responses two at a time into `out` (results/compare-<name>/pairwise/),
    unless its manifest says the outputs are up to date; return summary.json's content."""
    settings = config.judge
    if settings.repeats != 1:
        raise PairwiseError(f"judge.repeats = {settings.repeats}: pairwise mode asks each "
                            "question once per order; set judge.repeats = 1")
    if len(runs) < 2:
        raise PairwiseError("pairwise mode compares two runs or more; give more runs")
    results = Path(results)
    contenders = load_contenders(results, runs)
    questions = plan_questions(runs, settings, len(contenders[0].records))
    key = pairwise_key(settings, contenders)
    state, reason = freshness(out, key, OUTPUTS, pairwise_identity(settings),
                              "never judged pairwise")
    if state == "done":
        print(f"pairwise: up to date ({reason})")
        return json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    print(f"pairwise: running ({reason})")
    clock = time.monotonic()
    by_label = {c.label: c for c in contenders}
    ids = [record["id"] for record in contenders[0].records]
    # GPT-2 tokens of each response, the length the fit controls for; an empty one (blank or
    # missing) is 0, as it is treated.
    tokens = {c.label: [0 if is_empty(r["response"]) else len(encode(r["response"]))
                        for r in c.records] for c in contenders}

    def base(ask: Ask) -> dict:
        return question_record(ask, ids[ask.index], tokens[ask.first][ask.index],
                               tokens[ask.second][ask.index])

    with open_judge(config, results) as judge:
        identity = judge.identity
        (out / MANIFEST).unlink(missing_ok=True)  # the outputs get rewritten from here
        run_key = sha256_json({"key": key, "judge": asdict(identity), "rules": pairwise_rules()})
        done = resume(out / PARTIAL, run_key, total=len(questions), name="pairwise")
        todo = []
        for ask in questions:
            if ask.key in done:
                continue
            first = by_label[ask.first].records[ask.index]["response"]
            second = by_label[ask.second].records[ask.index]["response"]
            if is_empty(first) or is_empty(second):
                done[ask.key] = {**base(ask), "state": "empty",
                                 "verdict": empty_verdict(is_empty(first), is_empty(second))}
            else:
                todo.append(ask)
        texts = {ask.key: render_pairwise(contenders[0].records[ask.index],
                                          by_label[ask.first].records[ask.index]["response"],
                                          by_label[ask.second].records[ask.index]["response"])
                 for ask in todo}
        calls = [(ask.key, ask_question, judge, settings, texts[ask.key],
                  sized_options(judge, texts[ask.key], dict(settings.options),
                                f"item {ask.index} (id {ids[ask.index]}), {ask.first} as "
                                f"Response A, {ask.second} as Response B"),
                  base(ask)) for ask in todo]
        with answering(calls, settings.concurrency, "pairwise", judge.stopping) as answers:
            write_down(answers, done, out / PARTIAL, run_key, total=len(questions),
                       name="pairwise")

    records = [done[ask.key] for ask in questions]
    asked = [r for r in records if r["state"] != "empty"]
    states = Counter(r["state"] for r in records)
    summary = {
        "runs": list(runs),
        "items": len(ids),
        "pairs": settings.pairs,
        "anchor": settings.anchor or None,
        "questions": len(records),
        "states": {name: states.get(name, 0) for name in STATES},
        "left_out": {name: states.get(name, 0) for name in ("unparseable", "error")},
        "requests": len(asked),
        "cache_hits": sum(bool(r["cached"]) for r in asked),
        "judge": {"backend": identity.backend, "model": identity.model,
                  "digest": identity.digest},
        "structured": True,
        "options": dict(settings.options),
        "seconds": round(time.monotonic() - clock, 3),
    }
    write_jsonl(out / QUESTIONS, records)
    write_json(out / SUMMARY, summary)
    (out / PARTIAL).unlink(missing_ok=True)
    print(summary_line(summary))
    errors = [r for r in records if r["state"] == "error"]
    if errors:
        # No manifest: the next run asks again for these, the rest comes from the cache.
        first = errors[0]
        print(f"pairwise: {len(errors)} questions ended in error (first: item {first['index']} "
              f"id {first['id']}, {first['first']} vs {first['second']}: {first['error']}); "
              "run the same command again to ask for them, the rest comes from the judgment "
              "cache")
    else:
        write_json(out / MANIFEST, {
            "key": key, "key_hash": sha256_json(key), "judge": asdict(identity),
            "identity": {"digest": identity.digest, **pairwise_rules()},
            "outputs": {name: sha256_file(out / name) for name in OUTPUTS},
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return summary


def summary_line(summary: dict) -> str:
    pairs = ("all pairs" if summary["pairs"] == "all"
             else f"each with the anchor {summary['anchor']}")
    return (f"pairwise: {summary['items']} items x {len(summary['runs'])} models ({pairs}, "
            f"both orders): {summary['questions']} questions: "
            + ", ".join(f"{summary['states'][s]} {s}" for s in STATES)
            + f"; {summary['requests']} requests, {summary['cache_hits']} from the judgment "
              "cache")


# Each verdict in words: which response it names better (0: Response A, 1: B; None: a tie).
VERDICT_WORDS = {"A>>B": (0, "much better"), "A>B": (0, "better"), "A=B": (None, "tie"),
                 "B>A": (1, "better"), "B>>A": (1, "much better")}


def verdict_words(question: dict) -> str:
    """A questions.jsonl record's verdict in words, naming the model it found better:
    'a much better', 'b better', 'tie'."""
    winner, words = VERDICT_WORDS[question["verdict"]]
    return words if winner is None else f"{(question['first'], question['second'])[winner]} {words}"


def not_asked_why(question: dict) -> str:
    """Why a question in state `empty` was decided without asking: whose response is empty."""
    blank = [model for model, tokens in ((question["first"], question["first_tokens"]),
                                         (question["second"], question["second_tokens"]))
             if tokens == 0]
    return "both responses empty" if len(blank) == 2 else f"{blank[0]}'s response is empty"


def read_questions(out: Path) -> list[dict]:
    """questions.jsonl of a pairwise judgment folder."""
    return read_jsonl(out / QUESTIONS)


def fitted_questions(records: list[dict]) -> list[Question]:
    """The questions with a verdict (states judged and empty), as the Bradley-Terry fit takes
    them (an item is named by its index: ids may repeat); unparseable and error ones are left
    out (and counted by the caller)."""
    return [Question(item=str(r["index"]), first=r["first"], second=r["second"],
                     verdict=r["verdict"], first_tokens=r["first_tokens"], second_tokens=r["second_tokens"])
            for r in records if r["state"] in FITTED]
