"""The item viewer of a pairwise comparison's compare.html (evalpipe/compare/pairwise.py,
`render_html`), from hand-made questions: each item's task, every model's response (best rated
first, an empty one marked), every question in both orders with its state and verdict in words,
a flipped verdict marked, the items ordered by flips then splits, and everything from the data
escaped. The browser tests (tests/report/test_pages_in_browser.py) click through the filters."""

from __future__ import annotations

import itertools
import re

import pytest

from evalpipe.compare.pairwise import build_pairwise_board, render_html
from evalpipe.config import AggregateConfig, JudgeConfig
from evalpipe.judging.pairwise import Ask, question_record

MODELS = ("a", "b", "c")
SCRIPT = "<script>alert('x')</script>"


def item(index: int) -> dict:
    return {"id": f"id{index}", "instruction": f"Task {index} & more",
            "input": "" if index % 2 else f"input {index}", "output": f"reference {index}"}


# (item, first, second) -> (state, verdict or None, what else); every other question of the
# five items is the consistent one: the first model named better than the later.
ODD = {
    # item 1: a vs b flipped (each order says the first shown is better); a vs c split (much
    # better, then better); c's response is empty, so b vs c decided without asking
    (1, "a", "b"): ("judged", "A>B", {"reason": "A reads well"}),
    (1, "b", "a"): ("judged", "A>B", {"reason": f"B is {SCRIPT}"}),
    (1, "a", "c"): ("judged", "A>>B", {}),
    (1, "c", "a"): ("judged", "B>A", {}),
    (1, "b", "c"): ("empty", "A>>B", {}),
    (1, "c", "b"): ("empty", "B>>A", {}),
    # item 2: split (better, then a tie); an unparseable reply and an error
    (2, "a", "c"): ("judged", "A>B", {}),
    (2, "c", "a"): ("judged", "A=B", {"reason": "same"}),
    (2, "a", "b"): ("unparseable", None, {"raw_reply": "<b>no idea</b>", "problem": "no verdict"}),
    (2, "b", "c"): ("error", None, {"error": "HTTP 500: <down>"}),
    # item 3: every pair split, none flipped
    (3, "b", "a"): ("judged", "B>>A", {}),
    (3, "c", "a"): ("judged", "A=B", {}),
    (3, "c", "b"): ("judged", "B>>A", {}),
}


def response(model: str, index: int) -> str:
    if (model, index) == ("c", 1):
        return ""
    return SCRIPT if (model, index) == ("a", 1) else f"{model} answers {index}"


def questions(items: int = 5) -> list[dict]:
    records = []
    for index in range(items):
        for x, y in itertools.combinations(MODELS, 2):
            for first, second in ((x, y), (y, x)):
                state, verdict, extra = ODD.get((index, first, second), (
                    "judged", "A>B" if first == x else "B>A", {"reason": "fine"}))
                tokens = [0 if response(m, index) == "" else 3 for m in (first, second)]
                records.append(question_record(Ask(index, first, second), f"id{index}",
                                               *tokens, state=state, verdict=verdict, **extra))
    return records


@pytest.fixture
def html(tmp_path) -> str:
    records = questions()
    states = {s: sum(r["state"] == s for r in records)
              for s in ("judged", "empty", "unparseable", "error")}
    summary = {"items": 5, "pairs": "all", "questions": len(records), "states": states,
               "left_out": {"unparseable": 1, "error": 1}, "requests": 22, "cache_hits": 0,
               "judge": {"backend": "mock", "model": "overlap", "digest": None}}
    board = build_pairwise_board("t", list(MODELS), records, summary, JudgeConfig(),
                                 AggregateConfig(bootstrap_resamples=20), tmp_path, tmp_path,
                                 {m: None for m in MODELS})
    responses = {m: [{**item(i), "response": response(m, i)} for i in range(5)]
                 for m in MODELS}
    return render_html(board, {}, records, responses)


def sections(html: str) -> list[str]:
    return re.findall(r'<section class="item".*?</section>', html, re.DOTALL)


def test_items_with_flipped_then_split_verdicts_come_first_ties_in_test_order(html):
    heads = [re.match(r'<section class="item" data-index="(\d)" data-id="id\d" '
                      r'data-flipped="(\d)" data-split="(\d)">', s).groups()
             for s in sections(html)]
    assert heads == [("1", "1", "2"), ("3", "0", "3"), ("2", "0", "1"), ("0", "0", "0"),
                     ("4", "0", "0")]
    assert '<span class="disagreement">1 flipped, 2 split of 3 pairs</span>' in sections(html)[0]
    assert ("Items whose verdicts flipped with the order in most pairs come first, then those "
            "whose two orders of a pair disagreed in most pairs") in html


def test_an_item_shows_its_task_the_responses_best_rated_first_and_every_question(html):
    first = sections(html)[0]
    assert ("<p><b>Instruction:</b> Task 1 &amp; more</p>"
            '<div class="reference"><b>Reference:</b><pre>reference 1</pre></div>') in first
    cards = re.findall(r'<div class="response[^"]*" data-model="(\w)"', first)
    assert cards == ["a", "b", "c"]  # the mock ratings: a best, then b, then c
    assert ('<div class="response state-empty" data-model="c"><b>c</b> '
            '<small class="rating">rating ') in first
    assert '<p class="empty">(empty response)</p></div>' in first
    rows = re.findall(r'<tr class="question[^"]*" data-first="(\w)" data-second="(\w)"', first)
    assert rows == [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]


def test_each_question_says_its_state_and_verdict_in_words_and_a_flip_is_marked(html):
    first, second = (next(s for s in sections(html) if f'data-index="{index}"' in s)
                     for index in (1, 2))
    assert ('<tr class="question state-judged flipped" data-first="b" data-second="a" '
            'data-state="judged" data-flipped="true"><td>b vs a</td><td>judged</td>'
            '<td>A&gt;B, b better <span class="flip">flipped with the order: counted as a '
            'tie</span></td><td>B is &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</td>'
            '</tr>') in first
    assert ('<tr class="question state-judged" data-first="c" data-second="a" '
            'data-state="judged"><td>c vs a</td><td>judged</td><td>B&gt;A, a better</td>'
            '<td></td></tr>') in first
    assert ('<td>b vs c</td><td>empty</td><td>A&gt;&gt;B, b much better</td>'
            "<td>not asked: c&#x27;s response is empty</td>") in first
    assert ('<td>a vs b</td><td>unparseable</td><td>none (left out of the fit)</td>'
            "<td>reply: <pre>&lt;b&gt;no idea&lt;/b&gt;</pre></td>") in second
    assert ('<td>b vs c</td><td>error</td><td>none (left out of the fit)</td>'
            "<td>error: HTTP 500: &lt;down&gt;</td>") in second
    assert ('<td>c vs a</td><td>judged</td><td>A=B, tie</td><td>same</td>') in second
    # both orders of the flipped pair (both counted as ties), nothing else
    assert first.count('class="flip"') == 2 and 'data-flipped="true"' not in second
    assert ('data-first="a" data-second="b" data-state="judged" data-flipped="true"><td>a vs '
            'b</td><td>judged</td><td>A&gt;B, a better <span class="flip">') in first


def test_everything_from_the_data_is_escaped(html):
    body = html[html.index("<body>"):html.rindex("<script>")]
    assert "<script>" not in body
    assert "<b>no idea</b>" not in body and "<down>" not in body
    assert "<pre>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</pre>" in body


def test_a_models_name_in_the_ratings_opens_the_viewer_and_the_filters_are_there(html):
    assert '<a href="#viewer" class="show-model" data-show-model="b"' in html
    assert '<select id="model-filter"' in html and '<option value="c">c</option>' in html
    assert '<option value="flipped">verdict flipped with the order</option>' in html
    for state in ("judged", "empty", "unparseable", "error"):
        assert f'<option value="{state}">{state}</option>' in html
