"""Stage 4, judge: an LLM scores every response, completely and reproducibly.

For every record of generate/responses.jsonl the judge prompt (evalpipe/judging/prompts.py) is sent to
the judge backend (evalpipe/judging/backends/) and the reply is parsed into a score. Every item ends
in exactly one state, none is dropped:
  scored       the reply held a valid score
  empty        the response was empty or missing: score 0, the judge is not asked (the book's rule)
  unparseable  the reply held no valid score; the raw reply is kept
  error        the request failed for good (after retries on transient errors); message kept

What keeps the scores cheap to redo, safe to interrupt and never quietly stale:
- the judgment cache (SQLite, shared by every run under results/): the raw reply to a request,
  keyed by the SHA-256 of backend, model digest, rendered prompt, options and schema, with the
  prompt token count the server reported. Same settings, same model: the judge is not asked
  again. Replies are parsed and checked for truncation on every run, so a new rule re-reads
  cached replies without asking. Errors and truncated replies are never cached.
- judge/scores.partial.jsonl: each finished record is appended and flushed at once, tagged
  with a run key, so Ctrl-C or a crash loses no finished judgment and a rerun only asks for
  what is missing. Records in state `error` are not finished: a rerun asks again.
- the stage's manifest (evalpipe/stages/pipeline.py, the hooks `identity` and `incomplete`): the
  stage is stale when the served model's digest, the prompt text or the parsing rule's version
  changed, and incomplete while judgments ended in error, so the next run asks for them.
- canaries: a few known answers (the reference output as the response: should score high;
  an empty-looking reply such as 'N/A': should score near 0), judged exactly like the items and
  reported apart, to flag a judge that is not reading.

The pieces a judge of several runs at once ("together" mode, evalpipe/judging/together.py) reuses:
`open_judge` (preflight + cache + backend), `Judge.ask` (cache, retries, timing),
`read_responses`, `judge_fields` (the record layout of docs/records.md), and the loop that
asks and writes down: `answering` (the thread pool), `resume` and `write_down` (the partial
file, the progress bar).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from evalpipe import stats
from evalpipe.config import JudgeConfig, RunConfig
from evalpipe.errors import EvalpipeError
from evalpipe.io import (
    read_json_object,
    sha256_file,
    sha256_json,
    write_json,
    write_jsonl,
)
from evalpipe.judging import expected, prompts
from evalpipe.judging.engine import (
    EMPTY,
    Judge,
    Judgment,
    answering,
    format_number,
    is_empty,
    is_finished,
    judge_fields,
    judge_prompt,
    open_judge,
    prompt_hash,
    read_responses,
    repeat_options,
    resume,
    rounded_mean,
    served_digest,
    sized_options,
    write_down,
)
from evalpipe.judging.prompts import render, template_sha256
from evalpipe.paths import RunPaths
from evalpipe.records import count_of

SCORES = "scores.jsonl"
CANARIES = "canaries.jsonl"
SUMMARY = "summary.json"
PARTIAL = "scores.partial.jsonl"
CANARY_ITEMS = 5  # canaries are made from the first min(5, n) test items

# -- the stage contract (evalpipe/stages/contract.py) -------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    return ("generate",)


def config_key(config: RunConfig) -> dict:
    # How fast and where the judge is asked does not change its answers; mode and swap are
    # together mode's (evalpipe/judging/together.py), pairs and anchor pairwise mode's
    # (evalpipe/judging/pairwise.py), which this stage refuses.
    ignored = ["concurrency", "timeout", "retries", "cache", "hosts", "host", "api_key",
               "pull", "mode", "swap", "pairs", "anchor"]
    # strict_canaries decides no score, but turning it on must check outputs judged without
    # it: on, it is part of the key (the stage reruns, from the judgment cache, and fails there
    # if the canaries failed); off, the default, it is left out, so that runs judged before the
    # setting existed stay up to date.
    if not config.judge.strict_canaries:
        ignored.append("strict_canaries")
    # The book's integer scoring is left out for the same reason: runs judged before
    # judge.scoring existed stay up to date; "expected" changes the scores, so it is in.
    if config.judge.scoring == "integer":
        ignored.append("scoring")
    return {k: v for k, v in config.section("judge").items() if k not in ignored}


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    return {"generate/responses.jsonl": paths / "generate/responses.jsonl"}


def outputs(config: RunConfig) -> tuple[str, ...]:
    return (SCORES, CANARIES, SUMMARY)


def identity(config: RunConfig, paths: RunPaths) -> dict:
    """What decides the scores besides the settings and the responses (the stage cache's
    identity hook): the served model's digest, the prompt text, the parsing rule."""
    return {"digest": served_digest(config.judge), **rules(config.judge)}


def rules(settings: JudgeConfig) -> dict:
    """The code that decides the scores: a hash of the prompt text, the parsing rule's version,
    and with expected scoring the version of its rule (only then, so that other runs' keys
    stay as they were)."""
    decided_by = {"prompt_template": template_sha256(settings.template, settings.structured),
                  "parse_rule": prompts.PARSE_RULE_VERSION}
    if settings.scoring == "expected":
        decided_by["expected_rule"] = expected.EXPECTED_RULE_VERSION
    return decided_by


def incomplete(config: RunConfig, paths: RunPaths) -> str | None:
    """After a run: the judgments that ended in error (the stage cache's incomplete hook); the
    next run asks for them again."""
    errors = read_json_object(paths.stage_dir("judge") / SUMMARY).get("errors", 0)
    return count_of(errors, "error") if errors else None


# -- the stage ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One record to judge: a test item, or a canary made from one."""

    key: str  # the item's id, or "canary:good:<id>" / "canary:bad:<id>"
    record: dict  # what is rendered: instruction, input, output, response


# Replies that look like an answer but say nothing: a judge that reads scores them near 0.
EMPTY_LOOKING = ("N/A", "...", "I don't know.", "None", "### Response:")


def make_canaries(items: list[dict]) -> list[Job]:
    """For the first min(5, n) items: the reference output as the response (good), and an
    empty-looking reply (bad; EMPTY_LOOKING in turn). Both flag a judge that is not reading:
    it would give the two kinds alike."""
    jobs = []
    for index, item in enumerate(items[:CANARY_ITEMS]):
        base = {key: item[key] for key in ("instruction", "input", "output")}
        jobs.append(Job(f"canary:good:{item['id']}",
                        {"canary": "good", "item_id": item["id"], **base,
                         "response": item["output"]}))
        jobs.append(Job(f"canary:bad:{item['id']}",
                        {"canary": "bad", "item_id": item["id"], **base,
                         "response": EMPTY_LOOKING[index % len(EMPTY_LOOKING)]}))
    return jobs


def run(config: RunConfig, paths: RunPaths) -> None:
    settings = config.judge
    if settings.mode in ("together", "pairwise"):
        raise EvalpipeError(f"judge.mode = '{settings.mode}' judges several runs at once: "
                            "use 'evalpipe compare'")
    responses_path = paths / "generate/responses.jsonl"
    items = read_responses(responses_path)
    out = paths.stage_dir("judge")
    clock = time.monotonic()

    with open_judge(config, paths.results) as judge:
        identity = judge.identity
        # A partial record counts only if it was made from the same responses, by the same
        # judge model, with the same settings, prompt text and parsing rule.
        run_key = sha256_json({"config": config_key(config), "judge": asdict(identity),
                               "rules": rules(settings),
                               "responses": sha256_file(responses_path)})
        jobs = [Job(item["id"], item) for item in items]
        if settings.canaries:
            jobs += make_canaries(items)
        done = resume(out / PARTIAL, run_key, total=len(jobs), name="judge")
        for job in jobs:
            if job.key not in done and is_empty(job.record["response"]):
                done[job.key] = {**job.record, **judge_fields(
                    settings, identity, [EMPTY] * settings.repeats, None)}
        todo = [job for job in jobs if job.key not in done]
        _judge_jobs(judge, settings, todo, done, out / PARTIAL, run_key, total=len(jobs))

    scored = [done[item["id"]] for item in items]
    canaries = [done[job.key] for job in jobs[len(items):]]
    summary = make_summary(settings, identity, scored, canaries,
                           seconds=round(time.monotonic() - clock, 3))
    write_jsonl(out / SCORES, scored)
    write_jsonl(out / CANARIES, canaries)
    write_json(out / SUMMARY, summary)
    (out / PARTIAL).unlink(missing_ok=True)
    print(summary_line(summary))
    fallbacks = {how: n for how, n in summary.get("scoring", {}).items() if how != "expected"}
    if fallbacks:
        print(f"judge: judge.scoring = 'expected', but "
              + ", ".join(f"{n} items scored {how}" for how, n in fallbacks.items())
              + " (docs/judge.md, \"Expected scores\")")
    errors = [r for r in scored if r["state"] == "error"]
    if errors:
        print(f"judge: {len(errors)} items ended in error (first: id {errors[0]['id']}: "
              f"{errors[0]['error']}); the judge is incomplete: 'evalpipe judge' asks for "
              "them again, the rest comes from the judgment cache")
    why = summary["canaries"]["why"]
    if why is not None:
        # The outputs are written first: nothing is lost, and with strict_canaries off the
        # next run reads every judgment from the cache.
        if settings.strict_canaries:
            raise EvalpipeError(f"judge: {stats.canary_warning(why)}, and "
                                f"judge.strict_canaries is true; judge/{SCORES}, {CANARIES} and "
                                f"{SUMMARY} are written and every judgment is in the "
                                "judgment cache")
        print(f"judge: WARNING: {stats.canary_warning(why)}")


def _judge_jobs(judge: Judge, settings: JudgeConfig, todo: list[Job], done: dict[str, dict],
                partial_path: Path, run_key: str, *, total: int) -> None:
    """Ask every request of `todo` (a job has judge.repeats requests), judge.concurrency at a
    time; each job's record is written down as soon as all its requests are back."""
    prompts = {job.key: render(settings.template, job.record, structured=settings.structured)
               for job in todo}
    calls = [((job.key, repeat), judge_prompt, judge, settings.template, settings.structured,
              prompts[job.key], sized_options(judge, prompts[job.key],
                                              repeat_options(settings, repeat),
                                              f"item {job.key}"), settings.scoring)
             for job in todo for repeat in range(settings.repeats)]

    def whole_records(answers: Iterable[tuple[tuple[str, int], Judgment]]):
        pending: dict[str, list[Judgment | None]] = {job.key: [None] * settings.repeats
                                                     for job in todo}
        by_key = {job.key: job for job in todo}
        for (key, repeat), judgment in answers:
            pending[key][repeat] = judgment
            if all(j is not None for j in pending[key]):
                yield key, {**by_key[key].record, **judge_fields(
                    settings, judge.identity, pending.pop(key), prompt_hash(prompts[key]))}

    with answering(calls, settings.concurrency, "judge", judge.stopping) as answers:
        write_down(whole_records(answers), done, partial_path, run_key, total=total,
                   name="judge")


# -- the summary ----------------------------------------------------------------------------------

def make_summary(settings: JudgeConfig, identity, scored: list[dict], canaries: list[dict],
                 *, seconds: float) -> dict:
    """summary.json (docs/records.md): counts per state, who judged, how, the canaries (and
    whether the judge failed them)."""
    canary_summary = {"enabled": settings.canaries}
    for kind in ("good", "bad"):
        of_kind = [c for c in canaries if c["canary"] == kind]
        canary_summary[f"{kind}_mean"] = rounded_mean(
            [c["score"] for c in of_kind if c["state"] == "scored"], 2)
        canary_summary[kind] = stats.state_counts(of_kind)
    # Whether the judge failed its canaries, and why (docs/judge.md, "Canaries").
    why = stats.canary_failure(canaries)
    canary_summary.update(failed=why is not None, why=why)
    # Records (items and canaries) whose judgment was read from the cache, not asked.
    cache_hits = sum(bool(r["cached"]) for r in scored + canaries)
    # Records (items and canaries) with a judgment in error: the judge is incomplete, and the
    # next run asks for them again.
    errors = sum(not is_finished(r) for r in scored + canaries)
    summary = {
        "items": len(scored),
        "states": stats.state_counts(scored),
        "judge": {"backend": identity.backend, "model": identity.model,
                  "digest": identity.digest},
        "template": settings.template,
        "structured": settings.structured,
        "options": dict(settings.options),
        "repeats": settings.repeats,
        "canaries": canary_summary,
        "cache_hits": cache_hits,
        "errors": errors,
        "seconds": seconds,
    }
    if settings.scoring == "expected":
        # How many scored items got an expected score, and why the others kept the integer.
        summary["scoring"] = dict(Counter(r["scoring"] for r in scored
                                          if r["state"] == "scored"))
    return summary


def summary_line(summary: dict) -> str:
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    line = f"judge: {summary['items']} items: {states}"
    canaries = summary["canaries"]
    if canaries["enabled"]:
        line += (f"; canaries: good mean {format_number(canaries['good_mean'])}, "
                 f"bad mean {format_number(canaries['bad_mean'])}")
    return line + f"; {summary['cache_hits']} from the judgment cache"
