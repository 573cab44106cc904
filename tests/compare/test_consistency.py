"""`evalpipe compare`'s consistency check: runs are compared only on identical test splits,
and the first difference is named (docs/compare.md)."""

from __future__ import annotations

import pytest
from compare_helpers import ITEMS, judged, write_run

from evalpipe.cli import main
from evalpipe.records import content_id


def _changed(index: int, field: str, value: str) -> list[dict]:
    items = [dict(item) for item in ITEMS]
    items[index][field] = value
    return items


def _ids(items: list[dict]) -> list[str]:
    return [content_id(item) for item in items]


@pytest.mark.parametrize("other_items, expected", [
    (_changed(0, "instruction", "Rewrite the sentence in the active voice, please."),
     "runs a and b differ at item 0 (ids {a0} and {b0}), field instruction: "
     "'Rewrite the sentence in the passive voic...' against "
     "'Rewrite the sentence in the active voice...'"),
    (_changed(0, "input", "The dog chased the mouse."),
     "runs a and b differ at item 0 (ids {a0} and {b0}), field input: "
     "'The cat chased the mouse.' against 'The dog chased the mouse.'"),
    (_changed(1, "input", "in words"),
     "runs a and b differ at item 1 (ids {a1} and {b1}), field input: '' against 'in words'"),
    (_changed(3, "output", "Salut"),
     "runs a and b differ at item 3 (ids {a3} and {b3}), field output: 'Bonjour' against "
     "'Salut'"),
    ([ITEMS[0], ITEMS[2], ITEMS[1], ITEMS[3]],
     "runs a and b hold the same items in another order; the first difference is at item 1 "
     "(ids {a1} and {b1}), field instruction: 'What is 2+2?' against "
     "'Name a <b>bold</b> tag & its use.'"),
    (ITEMS[:3], "runs a and b do not share a test split: a has 4 items, b has 3"),
])
def test_runs_on_different_test_items_are_refused(tmp_path, capsys, other_items, expected):
    results = tmp_path / "results"
    write_run(results, "a", [judged(item, "Bonjour", "scored", 50) for item in ITEMS], "gpt2")
    write_run(results, "b", [judged(item, "Bonjour", "scored", 50) for item in other_items],
              "gpt2")
    ids = {f"a{i}": id_ for i, id_ in enumerate(_ids(ITEMS))}
    ids.update({f"b{i}": id_ for i, id_ in enumerate(_ids(other_items))})
    assert main(["compare", "a", "b", "--results", str(results)]) == 1
    assert capsys.readouterr().err == f"evalpipe: error: {expected.format(**ids)}\n"
    assert not (results / "compare-a-vs-b").exists()


def test_the_first_difference_is_named_against_the_first_run(tmp_path, capsys):
    results = tmp_path / "results"
    for name, items in (("a", ITEMS), ("b", ITEMS), ("c", _changed(2, "output", "<i>"))):
        write_run(results, name, [judged(item, "x", "scored", 50) for item in items], "gpt2")
    assert main(["compare", "a", "b", "c", "--results", str(results)]) == 1
    assert capsys.readouterr().err == (
        f"evalpipe: error: runs a and c differ at item 2 (ids {content_id(ITEMS[2])} and "
        f"{content_id(_changed(2, 'output', '<i>')[2])}), field output: '<b>' against '<i>'\n")
