"""Fixtures of the together-mode tests: three runs (tests/judging/together_runs.py)."""

import shutil
from pathlib import Path

import pytest
from together_runs import make_runs


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory, gpt2_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("together-runs")
    make_runs(folder)
    return folder


def fresh_copy(made: Path, run_env: Path, monkeypatch) -> Path:
    """The runs made once for a module, copied into this test's results/, judge retries quick."""
    shutil.copytree(made / "results", run_env / "results")
    monkeypatch.setenv("EVALPIPE_JUDGE_RETRY_DELAY", "0.01")
    return run_env / "results"


@pytest.fixture
def runs(run_env, made_runs, monkeypatch):
    """A fresh copy of the three runs in this test's results/."""
    return fresh_copy(made_runs, run_env, monkeypatch)


# -- pairwise mode (tests/judging/pairwise_runs.py) --------------------------------------------

@pytest.fixture(scope="module")
def made_pairwise_runs(tmp_path_factory, gpt2_tokenizer) -> Path:
    from pairwise_runs import make_runs as make_pairwise_runs

    folder = tmp_path_factory.mktemp("pairwise-runs")
    make_pairwise_runs(folder)
    return folder


@pytest.fixture
def pairwise_runs(run_env, made_pairwise_runs, monkeypatch):
    """A fresh copy of the runs a, b, c and d (8-word responses) in this test's results/."""
    return fresh_copy(made_pairwise_runs, run_env, monkeypatch)
