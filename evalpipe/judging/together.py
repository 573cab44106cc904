"""Judging several models together (`judge.mode = "together"`), for `evalpipe compare --mode
together` and for a config with several `model.bases`.

Scoring each model's answers in a separate pass lets scores drift between models: the judge
grades each answer alone, with nothing to anchor it. Here, for every test item, the judge sees
every model's response to it in ONE prompt (evalpipe/judging/prompts.py, `render_together`), labelled
neutrally "Response 1".."Response k", and returns a score and a one-sentence reason for each, as
JSON (always structured: k scores in free text could not be read back reliably).

The order shown is shuffled per item: the models, sorted by name (so the order the runs are
named in changes nothing), are shuffled by `random.Random(shuffle_seed)` with
`shuffle_seed = judge.options.seed + item index` (seed 123 when not set). Each model's record
keeps its `position` (1-based place shown) and the `shuffle_seed`, so every shuffle can be
redone and undone by hand. Empty or missing responses are not shown (the book's rule: state
`empty`, score 0); an item whose responses are all empty is not asked at all.

A reply that misses a model, scores one twice, names an unknown response, or is not the JSON
asked for makes the item `unparseable` for every model of it: when the judge loses track of
which response is which, none of its scores for that item can be trusted. Never counted as 0.

`judge.swap = true` is the position check: each item is judged a second time with the shown
order reversed. Both passes are kept in items.jsonl, and summary.json gives, per position, the
mean score of the first pass, of the swapped pass and of both, so a judge that favours a place
in the list shows; and the position `effect`: for each response scored in both passes, its
score at each of its two places minus the mean of the two, averaged per place (0 everywhere
for a judge that reads only the responses, whichever models were shown where; positive where
the judge favours the place). A model's own `score` is the first pass's: scores stay integers (as
docs/records.md says), turning the check on does not move the leaderboard, and since orders
are shuffled per item a position bias is spread evenly over the models anyway.

Everything the single mode guarantees holds: requests go through `judge.open_judge` (preflight,
the shared judgment cache, retries), judge.concurrency at a time, with tqdm progress; each
finished pass is appended to items.partial.jsonl at once, so a kill loses no finished judgment;
the final files are written atomically. Outputs, in results/compare-<name>/together/:

  scores/<model>.jsonl  one per model: the fields of judge/scores.jsonl plus position,
                        shuffle_seed and mode ("together"), in test order
  items.jsonl           one record per item and pass: order shown, seed, raw reply, state
  summary.json          states, who judged, the position check, cache hits
  manifest.json         what the outputs were made from: when it still matches, nothing runs

The manifest records, besides the settings and the responses' hashes, the judge's identity as
the judge stage's manifest does (evalpipe/stages/pipeline.py): the digest of the model that judged, a
hash of the together prompt's text and the parsing rule's version. A new digest (one GET
/api/tags tells), prompt text or rule makes the judgment stale; with the server down the digest
is not checked, and the judgment is kept (and said so).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from evalpipe import stats
from evalpipe.config import JudgeConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import sha256_file, sha256_json, write_json, write_jsonl
from evalpipe.judging import prompts
from evalpipe.judging.engine import (
    EMPTY,
    Judge,
    Judgment,
    answering,
    base_seed,
    format_number,
    is_empty,
    judge_fields,
    open_judge,
    prompt_hash,
    read_responses,
    resume,
    rounded_mean,
    served_digest,
    sized_options,
    write_down,
)
from evalpipe.judging.prompts import (
    parse_together,
    render_together,
    together_schema,
    together_template_sha256,
)
from evalpipe.manifest import identity_changes
from evalpipe.records import STATES, CompareError, check_same_test_items

FOLDER = "together"
SCORES_DIR = "scores"
ITEMS = "items.jsonl"
PARTIAL = "items.partial.jsonl"
SUMMARY = "summary.json"
MANIFEST = "manifest.json"
# The judge settings that decide the replies (where and how fast it is asked do not).
JUDGE_KEYS = ("backend", "model", "template", "options", "swap")


class TogetherError(EvalpipeError):
    """Runs or settings the together judge cannot work with; the message names them."""


# -- the models' responses ----------------------------------------------------------------------

@dataclass
class Contender:
    """One model's responses: a run's generate/responses.jsonl."""

    label: str  # the model's name: its run's name
    path: Path
    records: list[dict]


def load_contenders(results: Path, runs: list[str]) -> list[Contender]:
    """Every run's responses, checked field by field, on the same test items (compare's
    consistency check, with its messages)."""

    twice = [run for run, count in Counter(runs).items() if count > 1]
    if twice:
        raise CompareError(f"run {twice[0]} is named twice")
    contenders = []
    for run in runs:
        path = results / run / "generate/responses.jsonl"
        if not path.exists():
            raise CompareError(f"run {run}: {path} not found; make it with "
                               f"'make generate RUN={run}'")
        records = read_responses(path)
        if not records:
            raise CompareError(f"run {run}: {path} holds no records")
        contenders.append(Contender(run, path, records))
    check_same_test_items([(c.label, c.records) for c in contenders])
    return contenders


# -- what is asked: one pass per item (two with judge.swap) -------------------------------------

@dataclass(frozen=True)
class Pass:
    """One prompt: an item with its responses in one order."""

    index: int  # the item's place in the test split
    number: int  # 1, or 2 for the swapped (reversed) pass
    shuffle_seed: int
    order: tuple[str, ...]  # the models shown, position 1 first
    empty: tuple[str, ...]  # the models not shown: empty or missing response

    @property
    def key(self) -> str:
        return f"{self.index}:{self.number}"


def shuffle_seed(settings: JudgeConfig, index: int) -> int:
    return base_seed(settings) + index


def plan_passes(contenders: list[Contender], settings: JudgeConfig) -> list[Pass]:
    """Every pass, item by item: the first in the shuffled order, then (judge.swap) the same
    order reversed."""
    labels = sorted(c.label for c in contenders)  # the naming order must not change the shuffle
    by_label = {c.label: c for c in contenders}
    passes = []
    for index in range(len(contenders[0].records)):
        seed = shuffle_seed(settings, index)
        shown = [label for label in labels
                 if not is_empty(by_label[label].records[index]["response"])]
        empty = tuple(label for label in labels if label not in shown)
        order = tuple(random.Random(seed).sample(shown, len(shown)))
        passes.append(Pass(index, 1, seed, order, empty))
        if settings.swap:
            passes.append(Pass(index, 2, seed, order[::-1], empty))
    return passes


def render_pass(settings: JudgeConfig, contenders: list[Contender], job: Pass) -> str:
    by_label = {c.label: c for c in contenders}
    item = contenders[0].records[job.index]
    return render_together(settings.template, item,
                           [by_label[label].records[job.index]["response"] for label in job.order])


def pass_record(job: Pass, item_id: str, **fields) -> dict:
    """One line of items.jsonl (docs/compare.md)."""
    record = {"index": job.index, "id": item_id, "pass": job.number,
              "shuffle_seed": job.shuffle_seed, "order": list(job.order), "empty": list(job.empty),
              "state": "empty", "scores": None, "reasons": None, "problem": None,
              "raw_reply": None, "error": None, "prompt_sha256": None, "judge_seconds": 0.0,
              "cached": False}
    record.update(fields)
    return record


def ask_pass(judge: Judge, settings: JudgeConfig, job: Pass, prompt: str, options: dict,
             item_id: str) -> dict:
    """Ask one pass (cache, retries: Judge.ask) and read the reply; runs in a worker thread."""
    count = len(job.order)
    answer = judge.ask(prompt, options, together_schema(settings.template, count))
    asked = {"prompt_sha256": prompt_hash(prompt),
             "judge_seconds": answer.seconds, "cached": answer.cached}
    if answer.error is not None:
        return pass_record(job, item_id, state="error", error=answer.error, **asked)
    parsed = parse_together(settings.template, count, answer.raw)
    return pass_record(job, item_id, state=parsed.state,
                       scores=list(parsed.scores) if parsed.scores else None,
                       reasons=list(parsed.reasons) if parsed.reasons else None,
                       problem=parsed.problem, raw_reply=answer.raw, **asked)


# -- freshness: the manifest --------------------------------------------------------------------

def together_key(settings: JudgeConfig, contenders: list[Contender]) -> dict:
    """The settings and responses the outputs depend on (the judge's identity is apart:
    together_identity)."""
    return {"judge": {key: getattr(settings, key) for key in JUDGE_KEYS},
            "responses": {c.label: sha256_file(c.path) for c in contenders}}


def together_rules(settings: JudgeConfig) -> dict:
    """The code that decides the scores: a hash of the together prompt's text, the parsing
    rule's version."""
    return {"prompt_template": together_template_sha256(settings.template),
            "parse_rule": prompts.PARSE_RULE_VERSION}


def together_identity(settings: JudgeConfig) -> dict:
    """The judge's identity now, as the manifest records it: the served model's digest (one
    request to the server; Unchecked when it cannot tell) and together_rules."""
    return {"digest": served_digest(settings), **together_rules(settings)}


def output_names(contenders: list[Contender]) -> list[str]:
    return ([f"{SCORES_DIR}/{c.label}.jsonl" for c in contenders] + [ITEMS, SUMMARY])


def freshness(out: Path, key: dict, names: list[str], identity: dict,
              never: str = "never judged together") -> tuple[str, str]:
    """("done" | "stale" | "missing", why), from out/manifest.json, by content; `identity` is
    together_identity's, compared last as the judge stage's is (pipeline.identity_changes).
    Pairwise judging (evalpipe/judging/pairwise.py) keeps its manifest alike; `never` says
    why when there is none."""
    path = out / MANIFEST
    if not path.exists():
        return "missing", never
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return "missing", "its manifest is unreadable"
    if manifest.get("key_hash") != sha256_json(key):
        old = manifest.get("key", {})
        if old.get("responses", {}).keys() != key["responses"].keys():
            return "stale", "other models"
        if old.get("judge") != key["judge"]:
            return "stale", "judge settings changed"
        return "stale", "responses changed"
    recorded = manifest.get("outputs", {})
    for name in names:
        if name not in recorded or not (out / name).exists():
            return "stale", f"output {name} is missing"
        if sha256_file(out / name) != recorded[name]:
            return "stale", f"output {name} was changed by hand"
    changed, unchecked = identity_changes(manifest.get("identity", {}), identity)
    if changed:
        return "stale", ", ".join(changed)
    return "done", f"judged {manifest.get('finished', '?')}" + "".join(
        f"; {phrase}" for phrase in unchecked)


# -- the records ---------------------------------------------------------------------------------

def model_record(response: dict, label: str, first: dict, settings: JudgeConfig,
                 identity) -> dict:
    """A model's judge/scores.jsonl record for one item (docs/records.md) from the item's
    first pass, plus position, shuffle_seed and mode. A model not shown (its response is
    empty) gets the EMPTY judgment."""
    if label in first["order"]:
        position = first["order"].index(label) + 1
        scored = first["state"] == "scored"
        judgment = Judgment(first["state"], first["scores"][position - 1] if scored else None,
                            first["reasons"][position - 1] if scored else None,
                            first["raw_reply"], first["error"], first["judge_seconds"],
                            first["cached"])
        prompt_sha256 = first["prompt_sha256"]
    else:
        position, judgment, prompt_sha256 = None, EMPTY, None
    # judge.repeats is 1 in together mode, so one judgment.
    return {**response, **judge_fields(settings, identity, [judgment], prompt_sha256),
            "position": position, "shuffle_seed": first["shuffle_seed"], "mode": "together"}


def _place_effects(passes: list[dict]) -> dict[int, list[float]]:
    """For every response scored in both passes of its item, at places p1 and p2: its score
    at each place minus the mean of its two scores, listed under that place. A judge that
    reads only the responses gives 0 everywhere; one that favours a place, more there."""
    by_item: dict[int, dict[int, dict]] = {}
    for record in passes:
        by_item.setdefault(record["index"], {})[record["pass"]] = record
    effects: dict[int, list[float]] = {}
    for pair in by_item.values():
        first, second = pair.get(1), pair.get(2)
        if not (first and second and first["state"] == second["state"] == "scored"):
            continue
        for place, label in enumerate(first["order"]):
            other = second["order"].index(label)
            one, two = first["scores"][place], second["scores"][other]
            effects.setdefault(place + 1, []).append(one - (one + two) / 2)
            effects.setdefault(other + 1, []).append(two - (one + two) / 2)
    return effects


def _count_and_mean(values: list[float]) -> dict:
    return {"items": len(values), "mean": rounded_mean(values, 4)}


def position_means(passes: list[dict], swap: bool) -> list[dict]:
    """Per position shown (1-based): how many scores were given there and their mean, in the
    first pass, the swapped pass (null without judge.swap) and both together; with judge.swap
    also `effect`, the mean of _place_effects there. Only passes read in full (state scored)
    count."""
    scored = [p for p in passes if p["state"] == "scored"]
    top = max((len(p["order"]) for p in scored), default=0)
    effects = _place_effects(passes) if swap else {}
    rows = []
    for position in range(1, top + 1):
        by_pass = {number: [p["scores"][position - 1] for p in scored
                            if p["pass"] == number and len(p["order"]) >= position]
                   for number in (1, 2)}
        both = by_pass[1] + by_pass[2]
        effect = effects.get(position, [])
        rows.append({
            "position": position,
            "first": _count_and_mean(by_pass[1]),
            "second": _count_and_mean(by_pass[2]) if swap else None,
            "both": _count_and_mean(both),
            "effect": _count_and_mean(effect) if swap else None,
        })
    return rows


def together_freshness(out: Path, settings: JudgeConfig, runs: list[str],
                       results: Path) -> tuple[str, str]:
    """("done" | "stale" | "missing", why) of the together judgment of `runs` in `out`."""
    contenders = load_contenders(results, runs)
    return freshness(out, together_key(settings, contenders), output_names(contenders),
                     together_identity(settings))


# -- judging -------------------------------------------------------------------------------------

def judge_together(config: RunConfig, results: str | Path, runs: list[str], out: Path) -> dict:
    """Judge the runs' responses together into `out` (results/compare-<name>/together/), unless
    its manifest says the outputs are up to date; return summary.json's content."""
    settings = config.judge
    if settings.repeats != 1:
        raise TogetherError(f"judge.repeats = {settings.repeats}: together mode judges each "
                            "item once (twice with judge.swap); set judge.repeats = 1")
    results = Path(results)
    contenders = load_contenders(results, runs)
    key = together_key(settings, contenders)
    names = output_names(contenders)
    state, reason = freshness(out, key, names, together_identity(settings))
    if state == "done":
        print(f"together: up to date ({reason})")
        return json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    print(f"together: running ({reason})")
    clock = time.monotonic()
    passes = plan_passes(contenders, settings)
    ids = [record["id"] for record in contenders[0].records]

    with open_judge(config, results) as judge:
        identity = judge.identity
        # The judge answers: from here the outputs get rewritten, and the old manifest must
        # not vouch for them.
        (out / MANIFEST).unlink(missing_ok=True)
        # A partial record counts only if made from the same responses, by the same judge
        # model, with the same settings, prompt text and parsing rule.
        rules = together_rules(settings)
        run_key = sha256_json({"key": key, "judge": asdict(identity), "rules": rules})
        done = resume(out / PARTIAL, run_key, total=len(passes), name="together")
        for job in passes:
            if job.key not in done and not job.order:
                done[job.key] = pass_record(job, ids[job.index])
        todo = [job for job in passes if job.key not in done]
        _ask_all(judge, settings, contenders, todo, ids, done, out / PARTIAL, run_key,
                 total=len(passes))

    items = [done[job.key] for job in passes]
    first = {record["index"]: record for record in items if record["pass"] == 1}
    scores = {c.label: [model_record(response, c.label, first[index], settings, identity)
                        for index, response in enumerate(c.records)] for c in contenders}
    states = {label: stats.state_counts(records) for label, records in scores.items()}
    asked = [record for record in items if record["order"]]
    summary = {
        "runs": list(runs),
        "items": len(ids),
        "passes": 2 if settings.swap else 1,
        "states": states,
        "pass_states": {str(number): stats.state_counts([r for r in items
                                                         if r["pass"] == number])
                        for number in ((1, 2) if settings.swap else (1,))},
        "judge": {"backend": identity.backend, "model": identity.model,
                  "digest": identity.digest},
        "template": settings.template,
        "structured": True,
        "options": dict(settings.options),
        "swap": settings.swap,
        "shuffle": "random.Random(judge.options.seed + item index).sample(models by name)",
        "positions": position_means(items, settings.swap),
        "requests": len(asked),
        "cache_hits": sum(bool(r["cached"]) for r in asked),
        "seconds": round(time.monotonic() - clock, 3),
    }

    scores_dir = out / SCORES_DIR
    for label, records in scores.items():
        write_jsonl(scores_dir / f"{label}.jsonl", records)
    for stale in scores_dir.glob("*.jsonl"):  # models of an earlier comparison of this name
        if stale.stem not in scores:
            stale.unlink()
    write_jsonl(out / ITEMS, items)
    write_json(out / SUMMARY, summary)
    (out / PARTIAL).unlink(missing_ok=True)
    for line in summary_lines(summary):
        print(line)
    errors = [r for r in items if r["state"] == "error"]
    if errors:
        # No manifest: the next run asks again for these, the rest comes from the cache.
        print(f"together: {len(errors)} judgments ended in error (first: item {errors[0]['index']}"
              f" id {errors[0]['id']}: {errors[0]['error']}); run the same command again to "
              "ask for them, the rest comes from the judgment cache")
    else:
        write_json(out / MANIFEST, {
            "key": key, "key_hash": sha256_json(key), "judge": asdict(identity),
            "identity": {"digest": identity.digest, **rules},
            "outputs": {name: sha256_file(out / name) for name in names},
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return summary


def summary_lines(summary: dict) -> list[str]:
    totals = Counter()
    for counts in summary["states"].values():
        totals.update(counts)
    models = len(summary["states"])
    passes = "2 passes (swap)" if summary["swap"] else "1 pass"
    lines = [f"together: {summary['items']} items x {models} models, {passes}: "
             + ", ".join(f"{totals[s]} {s}" for s in STATES)
             + f"; {summary['requests']} requests, {summary['cache_hits']} from the judgment "
               "cache"]
    if summary["swap"]:
        lines.append("together: mean score by position shown (first / swapped / both; "
                     "effect): "
                     + ", ".join(f"{row['position']}: " + " / ".join(
                         format_number(row[part]["mean"]) for part in ("first", "second", "both"))
                         + f"; {format_number(row['effect']['mean'])}"
                         for row in summary["positions"]))
    return lines


def _ask_all(judge: Judge, settings: JudgeConfig, contenders: list[Contender], todo: list[Pass],
             ids: list[str], done: dict[str, dict], partial_path: Path, run_key: str, *,
             total: int) -> None:
    """Ask every pass of `todo`, judge.concurrency at a time; each pass's record is written
    down as soon as it is back. k responses make long prompts: each is sized first
    (`sized_options`: num_ctx raised as far as the model allows, else stop before asking)."""
    prompts = {job.key: render_pass(settings, contenders, job) for job in todo}
    calls = [(job.key, ask_pass, judge, settings, job, prompts[job.key],
              sized_options(judge, prompts[job.key], dict(settings.options),
                            f"item {job.index} (id {ids[job.index]}), pass {job.number}, "
                            f"{len(job.order)} responses"),
              ids[job.index]) for job in todo]
    with answering(calls, settings.concurrency, "together", judge.stopping) as answers:
        write_down(answers, done, partial_path, run_key, total=total, name="together")
