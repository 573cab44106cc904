"""Several fine-tuning seeds in one config (`finetune.seeds`, evalpipe/sweep.py): one sub-run
per seed (and base, with model.bases), each cached on its own, labelled (model, seed) for the
comparison; and `evaluate --jobs N`, the sub-runs in N processes with the same results.

End to end with the smoke config's tiny random GPT-2 shape, a few optimizer steps, and the
mock judge (judge.backend = "mock", in this process: no server).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalpipe.cli import main
from evalpipe.config import ConfigError, load_config
from evalpipe.sweep import sub_runs, subrun_labels, worker_settings

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.toml"


# -- naming and labelling the sub-runs -------------------------------------------------------------

def test_one_sub_run_per_seed_and_base_each_with_its_seed():
    config = load_config(None, ["model.bases=['gpt2', 'hf:me/mine']",
                                "finetune.seeds=[123, 124]", "finetune.epochs=3"])
    subs = sub_runs(config, "duo")
    assert [(s.name, s.base, s.model, s.seed) for s in subs] == [
        ("duo--gpt2--seed123", "gpt2", "gpt2", 123),
        ("duo--gpt2--seed124", "gpt2", "gpt2", 124),
        ("duo--hf-me-mine--seed123", "hf:me/mine", "hf-me-mine", 123),
        ("duo--hf-me-mine--seed124", "hf:me/mine", "hf-me-mine", 124)]
    for sub in subs:
        settings = sub.config
        assert (settings.model.base, settings.model.bases) == (sub.base, [])
        assert (settings.finetune.seed, settings.finetune.seeds) == (sub.seed, [])
        assert settings.finetune.epochs == 3
    assert config.finetune.seeds == [123, 124]  # left as it was
    assert subrun_labels(config, "duo")["duo--hf-me-mine--seed124"] == ("hf-me-mine", 124)


def test_seeds_without_bases_name_the_run_by_seed():
    config = load_config(None, ["model.base='gpt2'", "finetune.seeds=[7, 3]"])
    assert subrun_labels(config, "solo") == {"solo--seed7": ("gpt2", 7),
                                             "solo--seed3": ("gpt2", 3)}
    # no seeds: one sub-run per base with finetune.seed, named as before seeds existed
    config = load_config(None, ["model.bases=['gpt2']", "finetune.seed=5"])
    assert subrun_labels(config, "solo") == {"solo--gpt2": ("gpt2", 5)}


@pytest.mark.parametrize("seeds, message", [
    ("[1, 2, 1]", "finetune.seeds: 1 is listed twice"),
    ("[4, -1]", "finetune.seeds: each seed must be 0 or more, got -1"),
    ("[1.5]", "--set: finetune.seeds[0]: expected integer, got float 1.5"),
])
def test_bad_seeds_are_refused(seeds, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"finetune.seeds={seeds}"])
    assert str(caught.value) == message


def test_workers_get_a_gpu_each_or_a_share_of_the_cores():
    config = load_config(None, [])
    assert worker_settings(1, 2, gpus=2, cores=8, config=config) == ("1", 0)
    assert worker_settings(3, 4, gpus=2, cores=8, config=config) == ("1", 0)
    assert worker_settings(0, 2, gpus=0, cores=8, config=config) == (None, 4)
    assert worker_settings(0, 3, gpus=1, cores=2, config=config) == (None, 1)
    # a device the config chose itself is left alone
    pinned = load_config(None, ["finetune.device='cuda:1'"])
    assert worker_settings(0, 2, gpus=2, cores=8, config=pinned) == (None, 4)


# -- end to end ------------------------------------------------------------------------------------

def smoke_args(instruction_data: Path, seeds: str, *extra: str) -> list[str]:
    return ["--config", str(SMOKE), "--set", f"data.source={json.dumps(str(instruction_data))}",
            "--set", f"finetune.seeds={seeds}", "--set", "judge.backend='mock'", "--set", "judge.model='overlap'",
            "--set", "finetune.max_steps=2", "--set", "finetune.eval_interval=0",
            "--set", "generate.max_new_tokens=4", "--set", "aggregate.bootstrap_resamples=100",
            *extra]


def ran(out: str) -> dict[str, list[str]]:
    """Per sub-run, the stages its output says are running."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("== run "):
            current = line.split()[2]
            stages[current] = []
        elif line.startswith("== "):
            current = None
        elif current and (found := re.match(r"(\w+): running", line)):
            stages[current].append(found.group(1))
    return stages


def test_each_seed_is_fine_tuned_judged_and_cached_on_its_own(run_env, instruction_data,
                                                               gpt2_tokenizer, capsys):
    results = run_env / "results"
    assert main(["evaluate", *smoke_args(instruction_data, "[1, 2]"), "--run", "s"]) == 0
    out = capsys.readouterr().out
    everything = ["prepare", "finetune", "generate", "judge", "aggregate"]
    assert ran(out) == {"s--seed1": everything, "s--seed2": everything}
    assert "== run s--seed2 (model.base = random, finetune.seed = 2)\n" in out
    assert "== compare-s (2 sub-runs: 1 base model x 2 seeds, judge.mode = single)\n" in out
    for seed in (1, 2):
        written = load_config(results / f"s--seed{seed}" / "config.toml")
        assert (written.finetune.seed, written.finetune.seeds) == (seed, [])
    losses = [json.loads((results / f"s--seed{seed}/finetune/summary.json").read_text())
              for seed in (1, 2)]
    assert losses[0] != losses[1]  # two seeds, two different fine-tunes
    assert json.loads((results / "compare-s/subruns.json").read_text()) == [
        {"run": "s--seed1", "model": "random", "seed": 1, "base": "random"},
        {"run": "s--seed2", "model": "random", "seed": 2, "base": "random"}]
    board = json.loads((results / "compare-s/leaderboard.json").read_text())
    assert len(board["models"]) == 2
    # How sure: the two sub-runs are the two seeds of one model.
    (model,) = board["how_sure"]["models"]
    assert (model["model"], model["runs"], model["seeds"]) == ("s", ["s--seed1", "s--seed2"], 2)
    assert model["p_best"] == 1.0 and model["rank_interval"] == [1, 1]
    assert board["how_sure"]["pairs"] == []

    # A seed added later: only its sub-run runs; the others are up to date.
    assert main(["evaluate", *smoke_args(instruction_data, "[1, 2, 3]"), "--run", "s"]) == 0
    out = capsys.readouterr().out
    assert ran(out) == {"s--seed1": [], "s--seed2": [], "s--seed3": everything}
    assert [entry["run"] for entry in
            json.loads((results / "compare-s/subruns.json").read_text())] == [
        "s--seed1", "s--seed2", "s--seed3"]

    # status and clean act on every sub-run
    assert main(["status", *smoke_args(instruction_data, "[1, 2, 3]"), "--run", "s"]) == 0
    out = capsys.readouterr().out
    for seed in (1, 2, 3):
        assert (f"run s--seed{seed} (model.base = random, finetune.seed = {seed}) in "
                f"{results / f's--seed{seed}'}\n") in out
    assert "stale" not in out and "missing" not in out
    assert main(["clean", "aggregate", *smoke_args(instruction_data, "[1, 3]"),
                 "--run", "s"]) == 0
    capsys.readouterr()
    assert [(results / f"s--seed{seed}/aggregate").exists() for seed in (1, 2, 3)] == [
        False, True, False]


# What two runs of the same work may differ in: how long things took, which of two sub-runs
# sharing the judgment cache asked the judge first (cache_hits, cached), and so the hashes that
# manifests keep of files holding those.
TIMED = re.compile(r"seconds|^started$|^finished$|^cache_hits$|^cached$|tok_per_s")


def without_times(value):
    if isinstance(value, dict):
        return {key: without_times(item) for key, item in value.items() if not TIMED.search(key)}
    if isinstance(value, list):
        return [without_times(item) for item in value]
    return value


def comparable(root: Path) -> dict[str, object]:
    """Every file under root, as it should be the same from run to run: JSON parsed with the
    fields above left out, a manifest's file hashes reduced to the files' names, text without
    the training time, paths relative to root. The judgment cache is a SQLite database (its
    pages follow the order of writes): left out; the judgments are in scores.jsonl."""
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix == ".sqlite":
            continue
        name = str(path.relative_to(root))
        if path.suffix not in (".json", ".jsonl", ".html", ".md", ".toml"):
            files[name] = path.read_bytes()  # weights, plots
            continue
        text = path.read_text(encoding="utf-8").replace(str(root), "RESULTS")
        if path.name == "manifest.json":
            manifest = without_times(json.loads(text))
            for key in ("inputs", "outputs"):
                manifest[key] = sorted(manifest[key])
            files[name] = manifest
        elif path.suffix == ".json":
            files[name] = without_times(json.loads(text))
        elif path.suffix == ".jsonl":
            files[name] = [without_times(json.loads(line)) for line in text.splitlines()]
        else:
            files[name] = [line for line in text.splitlines() if "training time (s)" not in line
                           and "train_seconds" not in line]
    return files


def test_jobs_2_gives_the_results_of_jobs_1(tmp_path, monkeypatch, instruction_data,
                                            gpt2_tokenizer, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALPIPE_DATASETS", str(tmp_path / "datasets"))
    outputs = {}
    for jobs in (1, 2):
        # One thread in both: sums over other thread counts differ in their last bits.
        args = smoke_args(instruction_data, "[1, 2]", "--set", "finetune.num_threads=1",
                          "--results", str(tmp_path / f"jobs{jobs}"), "--run", "p",
                          "--jobs", str(jobs))
        assert main(["evaluate", *args]) == 0
        outputs[jobs] = capsys.readouterr().out
    everything = ["prepare", "finetune", "generate", "judge", "aggregate"]
    assert ran(outputs[2]) == ran(outputs[1]) == {"p--seed1": everything, "p--seed2": everything}
    # each sub-run's lines come in one piece, in the sub-runs' order, then the comparison
    heads = [line for line in outputs[2].splitlines() if line.startswith("== ")]
    assert heads == ["== run p--seed1 (model.base = random, finetune.seed = 1)",
                     "== run p--seed2 (model.base = random, finetune.seed = 2)",
                     "== compare-p (2 sub-runs: 1 base model x 2 seeds, judge.mode = single)"]
    assert outputs[2].count("compare: 2 models on 110 items") == 1

    one, two = comparable(tmp_path / "jobs1"), comparable(tmp_path / "jobs2")
    assert sorted(one) == sorted(two)
    assert {"p--seed1/finetune/model.safetensors", "p--seed2/judge/scores.jsonl",
            "compare-p/leaderboard.json", "compare-p/subruns.json"} <= set(one)
    for name in one:
        assert one[name] == two[name], name


def test_runs_made_before_seeds_existed_stay_up_to_date():
    """finetune.seeds only names sub-runs: it is not in the fine-tune's key, so a run's key
    (and its cached fine-tune) is the one it had before the key existed."""
    from evalpipe.stages.finetune import config_key

    key = config_key(load_config(None, ["model.base='random'"]))
    assert "seeds" not in key["finetune"] and key["finetune"]["seed"] == 123


def test_a_sub_run_that_fails_in_a_worker_stops_no_other(run_env, instruction_data,
                                                         gpt2_tokenizer, capsys):
    args = smoke_args(instruction_data, "[1]", "--set", "model.bases=['./nope.pth', 'random']",
                      "--run", "f", "--jobs", "2")
    assert main(["evaluate", *args]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        "evalpipe: error: model './nope.pth' is neither a GPT-2 preset (gpt2, gpt2-medium, "
        "gpt2-large, gpt2-xl), nor hf:OWNER/REPO, nor an existing file or folder")
    assert ran(captured.out) == {"f--nope--seed1": ["prepare", "finetune"],
                                 "f--random--seed1": ["prepare", "finetune", "generate",
                                                      "judge", "aggregate"]}
    assert (run_env / "results/f--random--seed1/aggregate/summary.json").is_file()
    assert not (run_env / "results/compare-f").exists()  # no comparison of unfinished runs
