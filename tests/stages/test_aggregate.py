"""The aggregate stage on judged runs made by hand: exact summary numbers, and the HTML report
read back with the standard library's parser."""

import base64
import hashlib
import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evalpipe import stats
from evalpipe.config import load_config
from evalpipe.errors import EvalpipeError
from evalpipe.paths import RunPaths
from evalpipe.report.format import lookup
from evalpipe.stages import aggregate
from evalpipe.stages.pipeline import Pipeline, get_stage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT_RESPONSE = "<script>alert(1)</script>"
IMPORTED = ["generate.from_file=responses.json"]  # a run without fine-tuning


def record(id, state, score, response, output, tokens, reason=None, **extra):
    return {"id": id, "instruction": f"Instruction {id}", "input": "", "output": output,
            "response": response, "prompt_tokens": None, "response_tokens": tokens,
            "stop_reason": "imported", "seconds": None, "state": state, "score": score,
            "reason": reason, "raw_reply": None if score is None else str(score),
            "error": "timed out after 3 retries" if state == "error" else None,
            "judge_backend": "ollama", "judge_model": "llama3", "judge_digest": "d1",
            "judge_template": "book", "prompt_sha256": "0" * 64, "judge_seconds": 0.5,
            "cached": False, **extra}


# Six items, every state. Token F1 by hand: a1 "cat sat on mat" / "cat sat" 2/3; a2 0; a3 0;
# a4 1; a5 "maybe so" / "maybe" 2/3; a6 "sky is blue" / "blue sky" 0.8.
HAND_MADE = [
    record("a1", "scored", 80, "a cat sat on the mat", "The cat sat.", 7, reason="Close."),
    record("a2", "scored", 10, SCRIPT_RESPONSE, "Paris", 9),
    record("a3", "empty", 0, "", "yes", 0),
    record("a4", "unparseable", None, "no", "no", 1),
    record("a5", "error", None, "maybe so", "maybe", 2),
    record("a6", "scored", 60, "the sky is blue", "blue sky", 4, reason="Fine & dandy."),
]


def judge_summary(repeats=1):
    return {"items": 6, "states": {}, "judge": {"backend": "ollama", "model": "llama3",
                                                "digest": "d1"},
            "template": "book", "structured": False,
            "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}, "repeats": repeats,
            "canaries": {}, "cache_hits": 0, "seconds": 3.0}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def judged_run(tmp_path, records, *, canaries=(), repeats=1, overrides=IMPORTED):
    """A run folder holding what the judge writes; returns (config, paths)."""
    paths = RunPaths(results=tmp_path / "results", run="r")
    write_jsonl(paths / "judge/scores.jsonl", records)
    write_jsonl(paths / "judge/canaries.jsonl", list(canaries))
    (paths / "judge/summary.json").write_text(json.dumps(judge_summary(repeats)))
    return load_config(None, list(overrides)), paths


def run_stage(config, paths) -> dict:
    """Run aggregate as the stage cache does (inputs checked, manifest written)."""
    Pipeline(config, paths, echo=lambda line: None).run_stage(get_stage("aggregate"))
    return json.loads((paths / "aggregate/summary.json").read_text())


class Report(HTMLParser):
    """What a test needs from report.html: the data-key numbers, item rows and their cells,
    images, tag counts, and the visible note."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.values: dict[str, list] = {}
        self.headlines: dict[str, tuple] = {}  # first screen: key -> (JSON value, its text)
        self.row_ids: list[str] = []
        self.cells: dict[str, list[str]] = {}
        self.images: list[tuple[str, str]] = []
        self.tags: Counter = Counter()
        self.note: str | None = None
        self._row = self._cell = self._note = self._headline = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if "data-key" in attrs:
            self.values.setdefault(attrs["data-key"], []).append(json.loads(attrs["data-value"]))
            if attrs["data-key"] == "note":
                self._note = []
        if "data-headline" in attrs:
            self._headline = (attrs["data-headline"], json.loads(attrs["data-value"]), tag, [])
        if tag == "tr" and "data-id" in attrs:
            self._row = attrs["data-id"]
            self.row_ids.append(self._row)
            self.cells[self._row] = []
        if tag == "td" and self._row is not None:
            self._cell = []
        if tag == "img":
            self.images.append((attrs["data-file"], attrs["src"]))

    def handle_endtag(self, tag):
        if self._headline is not None and tag == self._headline[2]:
            key, value, _, text = self._headline
            self.headlines[key] = (value, "".join(text))
            self._headline = None
        if tag == "td" and self._cell is not None:
            self.cells[self._row].append("".join(self._cell))
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "p" and self._note is not None:
            self.note = "".join(self._note)
            self._note = None

    def handle_data(self, data):
        if self._headline is not None:
            self._headline[3].append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._note is not None:
            self._note.append(data)


COLUMN = {"instruction": 2, "reference": 4, "response": 5, "state": 6, "score": 7,
          "reason": 8, "f1": 9}


def read_report(paths) -> tuple[str, Report]:
    text = (paths / "aggregate/report.html").read_text(encoding="utf-8")
    return text, Report(text)


def assert_numbers_match(report: Report, summary: dict) -> None:
    for key, values in report.values.items():
        for value in values:
            assert value == lookup(summary, key), key


def assert_images_are_the_plots(report: Report, paths) -> None:
    assert sorted(name for name, _ in report.images) == sorted(aggregate.PLOTS)
    for name, src in report.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix):])
        assert data.startswith(PNG_SIGNATURE)
        assert data == (paths / f"aggregate/{name}").read_bytes()


# -- the numbers --------------------------------------------------------------------------------

def test_summary_of_a_hand_made_run(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE)
    summary = run_stage(config, paths)
    counted = [80, 10, 0, 60]
    ci = [round(x, 4) for x in stats.bootstrap_ci(counted, 2000, 123, 0.95)]
    assert ci[0] <= 37.5 <= ci[1]
    assert summary == {
        "run": "r",
        "items": 6,
        "states": {"scored": 3, "empty": 1, "unparseable": 1, "error": 1},
        "note": None,
        # This judge/summary.json has no `errors` count: the items in state error are.
        "judge_incomplete": "judge incomplete: 1 error",
        # mean 37.5; squared deviations 1406.25 + 756.25 + 506.25 + 1806.25 = 4475; sd sqrt(4475/3)
        "score": {"n": 4, "mean": 37.5, "median": 35.0, "sd": 38.6221, "min": 0, "max": 80,
                  "ci": ci, "confidence": 0.95, "resamples": 2000, "seed": 123},
        "book_average": {"average": 37.5, "counted": 4, "dropped": 2},
        # F1 mean (2/3 + 0 + 0 + 1 + 2/3 + 0.8) / 6; Spearman over the scored a1, a2, a6:
        # F1 ranks [2, 1, 3] against score ranks [3, 1, 2]: 1 - 6*2/(3*8) = 0.5
        "overlap_f1": {"mean": 0.5222, "n": 6, "spearman_with_score": 0.5, "spearman_n": 3},
        # tokens 7, 9, 4 -> ranks [2, 3, 1] against [3, 1, 2]: 1 - 6*6/24 = -0.5
        "length": {"measure": "response_tokens", "mean": 3.8333,
                   "spearman_with_score": -0.5, "spearman_n": 3},
        "canaries": {"good": None, "bad": None, "separated": None, "failed": False,
                     "why": None},
        "self_consistency": None,
        "finetune": None,
        "judge": {"backend": "ollama", "model": "llama3", "digest": "d1", "template": "book",
                  "structured": False, "options": {"seed": 123, "temperature": 0,
                                                   "num_ctx": 2048}, "repeats": 1},
    }
    manifest = json.loads((paths / "aggregate/manifest.json").read_text())
    assert sorted(manifest["outputs"]) == sorted(aggregate.outputs(config))
    assert sorted(manifest["inputs"]) == ["judge/canaries.jsonl", "judge/scores.jsonl",
                                          "judge/summary.json"]


def test_bootstrap_settings_come_from_the_config(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE, overrides=[
        *IMPORTED, "aggregate.bootstrap_resamples=1000", "aggregate.seed=7",
        "aggregate.confidence=0.9"])
    score = run_stage(config, paths)["score"]
    expected = [round(x, 4) for x in stats.bootstrap_ci([80, 10, 0, 60], 1000, 7, 0.9)]
    assert (score["ci"], score["resamples"], score["seed"], score["confidence"]) == (
        expected, 1000, 7, 0.9)


def test_a_confidence_given_in_percent_is_refused(tmp_path):
    from evalpipe.config import load_config

    with pytest.raises(EvalpipeError, match=r"aggregate.confidence: must lie between 0 and 1 "
                                            r"\(0.95 for a 95% interval\), got 95.0"):
        load_config(None, ["aggregate.confidence=95"])


def test_length_falls_back_to_words_when_a_token_count_is_missing(tmp_path):
    records = [record("b1", "scored", 90, "one two three four", "x", None),
               record("b2", "scored", 50, "one two", "x", 2),
               record("b3", "scored", 70, "one", "x", 1)]
    config, paths = judged_run(tmp_path, records)
    length = run_stage(config, paths)["length"]
    # words 4, 2, 1 against scores 90, 50, 70: ranks [3, 2, 1] / [3, 1, 2]: 1 - 6*2/24
    assert length == {"measure": "words", "mean": 2.3333, "spearman_with_score": 0.5,
                      "spearman_n": 3}


def test_outputs_are_the_same_bytes_on_a_rerun(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE)
    run_stage(config, paths)
    out = paths.stage_dir("aggregate")
    first = {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
             for name in aggregate.outputs(config)}
    run_stage(config, paths)
    assert first == {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
                     for name in aggregate.outputs(config)}


# -- the report ---------------------------------------------------------------------------------

def test_report_shows_summary_json_and_every_item_once(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE)
    summary = run_stage(config, paths)
    text, report = read_report(paths)

    assert_numbers_match(report, summary)
    for key in ("items", "states.scored", "states.empty", "states.unparseable", "states.error",
                "score.n", "score.mean", "score.median", "score.sd", "score.ci",
                "book_average.average", "overlap_f1.mean", "overlap_f1.spearman_with_score",
                "length.spearman_with_score", "canaries.good", "self_consistency", "finetune",
                "judge.backend", "judge.model", "judge.digest", "judge.options"):
        assert key in report.values, key
    assert report.values["score.mean"] == [37.5]

    # worst first: no score (in test order), then lowest score first
    assert report.row_ids == ["a4", "a5", "a3", "a2", "a6", "a1"]
    assert Counter(report.row_ids) == Counter(r["id"] for r in HAND_MADE)
    cells = report.cells
    assert [cells[i][COLUMN["score"]] for i in report.row_ids] == ["—", "—", "0", "10", "60",
                                                                    "80"]
    assert cells["a1"][COLUMN["f1"]] == "0.667"
    assert cells["a6"][COLUMN["reason"]] == "Fine & dandy."
    assert cells["a5"][COLUMN["reason"]] == "error: timed out after 3 retries"
    assert cells["a1"][COLUMN["reference"]] == "The cat sat."

    # the response is shown as text, never run as markup
    assert cells["a2"][COLUMN["response"]] == SCRIPT_RESPONSE
    assert SCRIPT_RESPONSE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert report.tags["script"] == 1  # only the report's own sorting script
    assert report.note is None

    assert_images_are_the_plots(report, paths)


def test_summary_md_holds_the_same_numbers(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE)
    run_stage(config, paths)
    lines = (paths / "aggregate/summary.md").read_text().splitlines()
    assert lines[0] == "# evalpipe run `r`"
    assert "| mean | 37.50 |" in lines
    assert "| book's average | 37.50 |" in lines
    assert "| failures dropped | 2 |" in lines
    assert "| Spearman of F1 with score (items the judge read) | 0.500 |" in lines
    assert "no fine-tuning in this run" in lines


# -- runs where something is missing or went wrong --------------------------------------------

def test_a_run_with_no_scored_items(tmp_path):
    records = [record("c1", "error", None, "text", "text", 1),
               record("c2", "unparseable", None, "other", "text", 1)]
    config, paths = judged_run(tmp_path, records)
    summary = run_stage(config, paths)
    assert summary["note"] == "no scored items"
    assert summary["states"] == {"scored": 0, "empty": 0, "unparseable": 1, "error": 1}
    assert summary["score"] == {"n": 0, "mean": None, "median": None, "sd": None, "min": None,
                                "max": None, "ci": None, "confidence": 0.95,
                                "resamples": 2000, "seed": 123}
    assert summary["book_average"] == {"average": None, "counted": 0, "dropped": 2}
    assert summary["overlap_f1"]["mean"] == 0.5  # the overlap needs no judge
    assert summary["overlap_f1"]["spearman_with_score"] is None

    _, report = read_report(paths)
    assert report.note == "no scored items"
    assert report.values["score.mean"] == [None]
    assert_numbers_match(report, summary)
    assert sorted(report.row_ids) == ["c1", "c2"]
    assert_images_are_the_plots(report, paths)
    assert "**no scored items**" in (paths / "aggregate/summary.md").read_text()


def test_a_run_with_no_items(tmp_path):
    config, paths = judged_run(tmp_path, [])
    summary = run_stage(config, paths)
    assert (summary["items"], summary["note"], summary["overlap_f1"]["mean"]) == (
        0, "no scored items", None)
    text, report = read_report(paths)
    assert report.row_ids == []
    assert "no items in this run" in text
    assert_numbers_match(report, summary)


def test_repeats_and_canaries(tmp_path):
    def repeated(id, scores):
        repeats = [{"seed": 123 + k, "state": "scored" if s is not None else "unparseable",
                    "score": s, "raw_reply": None} for k, s in enumerate(scores)]
        first = scores[0]
        return record(id, "scored" if first is not None else "unparseable", first, "an answer",
                      "an answer", 2, repeats=repeats)

    records = [repeated("d1", [80, 80, 80]), repeated("d2", [60, 70, 80]),
               repeated("d3", [None, 40, 40]), repeated("d4", [90, None, None])]
    canaries = [{"canary": "good", "item_id": "d1", "state": "scored", "score": 100},
                {"canary": "good", "item_id": "d2", "state": "scored", "score": 85},
                {"canary": "bad", "item_id": "d1", "state": "scored", "score": 20},
                {"canary": "bad", "item_id": "d2", "state": "error", "score": None}]
    config, paths = judged_run(tmp_path, records, canaries=canaries, repeats=3,
                               overrides=[*IMPORTED, "judge.repeats=3"])
    summary = run_stage(config, paths)
    # sds: d1 0, d2 10 (60/70/80), d3 0 (40, 40); d4 has one score and is not compared
    assert summary["self_consistency"] == {"repeats": 3, "items_compared": 3,
                                           "mean_sd": 3.3333, "max_sd": 10.0,
                                           "share_differ": 0.3333}
    assert summary["canaries"] == {
        "good": {"count": 2, "scored": 2, "mean": 92.5, "min": 85, "max": 100},
        "bad": {"count": 2, "scored": 1, "mean": 20.0, "min": 20, "max": 20},
        "separated": True, "failed": False, "why": None}

    text, report = read_report(paths)
    assert_numbers_match(report, summary)
    assert report.values["self_consistency.share_differ"] == [0.3333]
    assert report.values["canaries.good.mean"] == [92.5]
    assert report.cells["d2"][COLUMN["score"]] == "60repeats: 60, 70, 80"
    assert report.cells["d3"][COLUMN["score"]] == "—repeats: —, 40, 40"
    assert text.count('<tr data-canary="good">') == 2
    assert text.count('<tr data-canary="bad">') == 2


def test_empty_items_do_not_count_as_consistent_repeats(tmp_path):
    """An empty response is never sent to the judge: its repeats' 0s are the book's rule, not
    k answers that agree, so self-consistency leaves the item out."""
    def repeated(id, state, scores, response="an answer"):
        repeats = [{"seed": 123 + k, "state": state, "score": s, "raw_reply": None}
                   for k, s in enumerate(scores)]
        return record(id, state, scores[0], response, "an answer", 2, repeats=repeats)

    records = [repeated("e1", "scored", [60, 80]), repeated("e2", "scored", [50, 50]),
               repeated("e3", "empty", [0, 0], response=""),
               repeated("e4", "empty", [0, 0], response="")]
    config, paths = judged_run(tmp_path, records, repeats=2,
                               overrides=[*IMPORTED, "judge.repeats=2", "judge.canaries=false"])
    (paths / "judge/canaries.jsonl").unlink()
    summary = run_stage(config, paths)
    # sds: e1 14.1421 (60, 80), e2 0; e3 and e4 were never asked and are not compared
    # (counted as agreeing they would give 4 items, mean sd 3.5355, share_differ 0.25)
    assert summary["self_consistency"] == {"repeats": 2, "items_compared": 2,
                                           "mean_sd": 7.0711, "max_sd": 14.1421,
                                           "share_differ": 0.5}
    text, report = read_report(paths)
    assert report.cells["e3"][COLUMN["score"]] == "0repeats: —, —"


def test_without_canaries_the_stage_does_not_ask_for_them(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE, overrides=[*IMPORTED, "judge.canaries=false"])
    (paths / "judge/canaries.jsonl").unlink()
    assert run_stage(config, paths)["canaries"] == {
        "good": None, "bad": None, "separated": None, "failed": False, "why": None}
    assert "no canaries in this run" in (paths / "aggregate/summary.md").read_text()


def test_a_judge_that_failed_its_canaries_is_flagged_at_the_top(tmp_path, capsys):
    """No bad canary was scored: nothing shows the judge can tell good from bad."""
    canaries = [{"canary": "good", "item_id": "a1", "state": "scored", "score": 100},
                {"canary": "bad", "item_id": "a1", "state": "unparseable", "score": None},
                {"canary": "bad", "item_id": "a2", "state": "error", "score": None}]
    config, paths = judged_run(tmp_path, HAND_MADE, canaries=canaries)
    summary = run_stage(config, paths)
    why = ("no bad canary was scored (1 unparseable, 1 error), so nothing shows that the judge "
           "tells a good answer from a bad one")
    assert summary["canaries"] == {
        "good": {"count": 1, "scored": 1, "mean": 100.0, "min": 100, "max": 100},
        "bad": {"count": 2, "scored": 0, "mean": None, "min": None, "max": None},
        "separated": None, "failed": True, "why": why}
    warning = f"the judge failed its canaries ({why}); its scores are not meaningful"
    lines = (paths / "aggregate/summary.md").read_text().splitlines()
    assert lines[:4] == ["# evalpipe run `r`", "", f"**WARNING: {warning}.**", ""]
    assert f"aggregate: WARNING: {warning}\n" in capsys.readouterr().out


def test_a_fine_tuned_run_shows_its_losses(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE, overrides=[])
    assert aggregate.uses_finetune(config)
    finetune = {"base_model": "gpt2-medium", "base_sha256": "f" * 64, "base_test_loss": 3.9512,
                "base_val_loss": 3.8123, "finetuned_test_loss": 0.6871, "final_val_loss": 0.7012,
                "best_val_loss": 0.6655, "steps": 230, "tokens_seen": 120000, "epochs": 2.0,
                "stopped_early": False, "train_seconds": 940.25, "parameters": 406286336}
    (paths / "finetune").mkdir()
    (paths / "finetune/summary.json").write_text(json.dumps(finetune))
    write_jsonl(paths / "finetune/metrics.jsonl", [
        {"step": s, "epoch": s / 115, "tokens_seen": 500 * s, "train_loss": 3.0 / (1 + s / 20),
         "val_loss": 3.1 / (1 + s / 25), "lr": 5e-5, "seconds": s * 4.0}
        for s in range(5, 235, 5)])
    summary = run_stage(config, paths)
    assert summary["finetune"] == {k: v for k, v in finetune.items() if k != "base_sha256"}
    manifest = json.loads((paths / "aggregate/manifest.json").read_text())
    assert "finetune/metrics.jsonl" in manifest["inputs"]

    _, report = read_report(paths)
    assert report.values["finetune.base_test_loss"] == [3.9512]
    assert report.values["finetune.finetuned_test_loss"] == [0.6871]
    assert report.values["finetune.train_seconds"] == [940.25]
    assert_numbers_match(report, summary)
    # The first screen: the base model and its losses beside the score and the judge.
    assert {key: report.headlines[key] for key in (
        "finetune.base_model", "finetune.base_test_loss", "finetune.finetuned_test_loss",
        "finetune.best_val_loss", "judge.model", "judge.digest", "states.error")} == {
        "finetune.base_model": ("gpt2-medium", "gpt2-medium"),
        "finetune.base_test_loss": (3.9512, "3.9512"),
        "finetune.finetuned_test_loss": (0.6871, "0.6871"),
        "finetune.best_val_loss": (0.6655, "0.6655"),
        "judge.model": ("llama3", "llama3"), "judge.digest": ("d1", "d1"),
        "states.error": (1, "error 1")}
    assert report.headlines["score.mean"] == (summary["score"]["mean"],
                                              f"{summary['score']['mean']:.2f}")
    assert_images_are_the_plots(report, paths)

    # the loss plot is the real curve, not the picture a run without fine-tuning gets
    other_config, other_paths = judged_run(tmp_path / "other", HAND_MADE)
    run_stage(other_config, other_paths)
    assert (paths / "aggregate/loss_curves.png").read_bytes() != (
        other_paths / "aggregate/loss_curves.png").read_bytes()


def test_a_fine_tuned_run_needs_the_finetune_files(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE, overrides=[])
    with pytest.raises(EvalpipeError, match=r"aggregate: input finetune/summary.json not found"):
        run_stage(config, paths)


@pytest.mark.parametrize("bad, message", [
    ({"score": 150}, r"scores.jsonl: record 1 \(id a2\): field 'score' must be an integer "
                     r"0..100 for state 'scored', got 150"),
    ({"state": "maybe"}, r"scores.jsonl: record 1 \(id a2\): field 'state' must be one of "
                         r"scored, empty, unparseable, error, got 'maybe'"),
    ({"state": "error"}, r"record 1 \(id a2\): field 'score' must be null for state 'error'"),
    ({"id": "a1"}, r"record 1 \(id a1\): the id occurs twice"),
])
def test_bad_scores_are_named_and_nothing_is_written(tmp_path, bad, message):
    records = [dict(r) for r in HAND_MADE]
    records[1].update(bad)
    config, paths = judged_run(tmp_path, records)
    with pytest.raises(EvalpipeError, match=message):
        run_stage(config, paths)
    assert not (paths / "aggregate/summary.json").exists()
    assert not (paths / "aggregate/report.html").exists()


def test_a_missing_field_and_a_broken_line_are_named(tmp_path):
    records = [dict(r) for r in HAND_MADE]
    del records[2]["state"]
    config, paths = judged_run(tmp_path, records)
    with pytest.raises(EvalpipeError, match=r"scores.jsonl: record 2: field 'state' is missing"):
        run_stage(config, paths)
    with open(paths / "judge/scores.jsonl", "a") as handle:
        handle.write('{"id": "cut short\n')
    with pytest.raises(EvalpipeError, match=r"scores.jsonl: line 7: not valid JSON"):
        run_stage(config, paths)


def test_a_judge_summary_without_the_judge_is_named(tmp_path):
    config, paths = judged_run(tmp_path, HAND_MADE)
    (paths / "judge/summary.json").write_text(json.dumps({"items": 6}))
    with pytest.raises(EvalpipeError, match=r"judge/summary.json: key 'judge' is missing"):
        run_stage(config, paths)


# -- real text ----------------------------------------------------------------------------------

def test_the_books_110_responses(tmp_path, book_responses):
    """The book's real responses (quotes, ampersands, code) in the report, each exactly once and
    shown as written. The scores are made up here; judging them is the judge's test."""
    book = json.loads(book_responses.read_text(encoding="utf-8"))
    records = [record(f"{i:012x}", "scored", (i * 37) % 101, entry["model_response"],
                      entry["output"], None) for i, entry in enumerate(book)]
    for rec, entry in zip(records, book):
        rec["instruction"], rec["input"] = entry["instruction"], entry["input"]
    config, paths = judged_run(tmp_path, records)
    summary = run_stage(config, paths)
    assert summary["items"] == 110
    assert summary["length"]["measure"] == "words"
    assert summary["overlap_f1"]["mean"] == round(
        sum(stats.token_f1(e["model_response"], e["output"]) for e in book) / 110, 4)

    _, report = read_report(paths)
    assert sorted(report.row_ids) == sorted(r["id"] for r in records)
    for rec in records:
        cells = report.cells[rec["id"]]
        assert cells[COLUMN["response"]] == rec["response"]
        assert cells[COLUMN["instruction"]] == rec["instruction"]
        assert cells[COLUMN["reference"]] == rec["output"]
    assert_numbers_match(report, summary)


def test_summary_numbers_are_rounded_everywhere():
    """stats.rounded, which summary.json and compare's leaderboard.json go through."""
    import numpy as np

    value = {"a": 0.123456, "b": [1.00004, (np.float64(2.71828), 3)], "c": None, "d": "x",
             "e": True, "f": 7}
    rounded = stats.rounded(value, aggregate.DECIMALS)
    assert rounded == {"a": 0.1235, "b": [1.0, [2.7183, 3]], "c": None, "d": "x", "e": True,
                       "f": 7}
    assert type(rounded["b"][1][0]) is float


def test_run_and_judge_names_do_not_break_summary_md(tmp_path):
    """A run named `a|b*<script>`, a judge model `x_y*z`: shown as written, as code in the
    title, escaped in the table (report/format.py: md_code, md)."""
    paths = RunPaths(results=tmp_path / "results", run="a|b*<script>`")
    write_jsonl(paths / "judge/scores.jsonl", HAND_MADE)
    write_jsonl(paths / "judge/canaries.jsonl", [])
    summary = judge_summary()
    summary["judge"]["model"] = "x_y*z"
    (paths / "judge/summary.json").write_text(json.dumps(summary))
    config = load_config(None, IMPORTED)
    run_stage(config, paths)
    lines = (paths / "aggregate/summary.md").read_text().splitlines()
    assert lines[0] == "# evalpipe run `` a|b*<script>` ``"
    assert r"| model | x\_y\*z |" in lines
    assert r"| options | seed=123, temperature=0, num\_ctx=2048 |" in lines
