"""Pairwise mode's length control: a stand-in judge that likes long answers
(tests/judging/pairwise_runs.py, length_judge) ranks the models by length more than by quality;
the length-controlled ratings see through it and the models are flagged."""

from __future__ import annotations

import shutil

import pytest
from pairwise_runs import board_of, compare, length_judge, make_runs, varied_response
from standins import OllamaStandIn

# True order a > b > c, but c writes the longest answers and a the shortest.
TRUTH = {"a": 1.0, "b": 0.0, "c": -1.0}
LENGTH_WEIGHT = 6.0


@pytest.fixture(scope="module")
def made_length_runs(tmp_path_factory, gpt2_tokenizer):
    folder = tmp_path_factory.mktemp("pairwise-length-runs")
    make_runs(folder, varied_response, models=("a", "b", "c"))
    return folder


def test_length_control_recovers_the_true_order(run_env, made_length_runs, monkeypatch):
    shutil.copytree(made_length_runs / "results", run_env / "results")
    with OllamaStandIn(length_judge(TRUTH, LENGTH_WEIGHT)) as standin:
        assert compare(standin.url) == 0
    board = board_of(run_env / "results")
    raw = [row["model"] for row in board["models"]]  # ranked by the raw rating
    controlled = sorted(raw, key=lambda m: -next(
        row["bt_rating_length_controlled"] for row in board["models"] if row["model"] == m))
    assert controlled == ["a", "b", "c"]
    assert raw != ["a", "b", "c"]
    assert raw[0] == "c"  # the longest writer wins the raw ranking
    assert board["pairwise"]["length_coefficient"] > 0
    flags = {row["model"]: row["length_flag"] for row in board["models"]}
    assert flags == {"a": False, "b": True, "c": True}  # a is the anchor: never flagged
