"""The first run (issue #13): the judge checked before long work, `evalpipe doctor`, and
`evalpipe open`. The judge is the stand-in Ollama server over real HTTP."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import pytest
from standins import OllamaStandIn, book_judge, together_judge, unused_url

from evalpipe.cli import main
from evalpipe.config import load_config
from evalpipe.doctor import (
    TIKTOKEN_RECIPE,
    Check,
    base_check,
    data_check,
    device_check,
    doctor_checks,
    doctor_lines,
    tokenizer_check,
)
from evalpipe.paths import default_paths

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.toml"
STANDIN_DIGEST = hashlib.sha256(b"evalpipe stand-in model llama3:latest").hexdigest()


@pytest.fixture
def ollama():
    with OllamaStandIn(book_judge) as server:
        yield server


def command(name: str, *settings: str, extra: tuple[str, ...] = ()) -> int:
    args = [name, "--config", str(SMOKE), "--run", "first", *extra]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


# -- 1. the judge, checked before long work ------------------------------------------------------

@pytest.mark.parametrize("name", ["evaluate", "judge", "aggregate"])
def test_a_stopped_judge_stops_the_command_in_seconds_before_any_work(
        run_env, instruction_data, gpt2_tokenizer, capsys, name):
    down = unused_url()
    started = time.monotonic()
    assert command(name, f"data.source={instruction_data}", f"judge.host={down}") == 1
    assert time.monotonic() - started < 10
    assert one_error_line(capsys) == (f"evalpipe: error: judge: cannot reach Ollama at {down}: "
                                      "is it running? start it with 'ollama serve'")
    assert not (run_env / "results/first").exists()  # no prepare/, finetune/ nor generate/


def test_a_missing_judge_model_stops_evaluate_before_fine_tuning(
        run_env, instruction_data, gpt2_tokenizer, capsys):
    """judge.pull = false: the one line; the default pulls first, and a model the registry
    does not have stops the run just as early (tests/judging/test_pull.py: one it has)."""
    with OllamaStandIn(book_judge, models={"mistral:latest": STANDIN_DIGEST}) as server:
        assert command("evaluate", f"data.source={instruction_data}",
                       f"judge.host={server.url}", "judge.pull=false") == 1
        assert one_error_line(capsys) == (f"evalpipe: error: judge: Ollama at {server.url} has "
                                          "no model 'llama3': run 'ollama pull llama3'")
        assert server.pulls == []
        assert command("evaluate", f"data.source={instruction_data}",
                       f"judge.host={server.url}") == 1
        assert server.pulls == ["llama3"]
    assert capsys.readouterr().err.endswith(
        f"evalpipe: error: judge: Ollama at {server.url} could not pull 'llama3': "
        "pull model manifest: file does not exist\n")
    assert not (run_env / "results/first/finetune").exists()
    assert not (run_env / "results/first/generate").exists()


def test_several_bases_are_checked_before_the_first_fine_tune(
        run_env, instruction_data, gpt2_tokenizer, capsys):
    down = unused_url()
    assert command("evaluate", f"data.source={instruction_data}", f"judge.host={down}",
                   'model.bases=["random", "./mine.pth"]') == 1
    assert "cannot reach Ollama" in one_error_line(capsys)
    assert list((run_env / "results").glob("*")) == []


def test_no_judge_check_goes_on_to_fine_tune(run_env, instruction_data, gpt2_tokenizer, capsys):
    down = unused_url()
    assert command("evaluate", f"data.source={instruction_data}", f"judge.host={down}",
                   "finetune.max_steps=2", "generate.max_new_tokens=2",
                   extra=("--no-judge-check",)) == 1
    out = capsys.readouterr()
    assert "finetune: done" in out.out and "generate: done" in out.out
    assert (run_env / "results/first/finetune/model.safetensors").exists()
    assert (run_env / "results/first/generate/responses.jsonl").exists()
    assert "cannot reach Ollama" in out.err


def test_a_ready_judge_is_one_line_and_a_finished_run_needs_no_judge(
        run_env, instruction_data, book_responses, gpt2_tokenizer, capsys):
    settings = [f"data.source={instruction_data}", f"generate.from_file={book_responses}"]
    with OllamaStandIn(book_judge) as server:
        assert command("evaluate", *settings, f"judge.host={server.url}") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == (f"judge: llama3:latest (digest {STANDIN_DIGEST[:12]}) at "
                          f"{server.url} is ready")
        assert out[1].startswith("prepare: running")
        # Everything up to date: the judge is not due, so only the stage cache asks it.
        assert command("evaluate", *settings, f"judge.host={server.url}") == 0
        assert "is ready" not in capsys.readouterr().out
        url = server.url
    # The server is down now, and the run is finished: results kept, digest not checked.
    assert command("evaluate", *settings, f"judge.host={url}") == 0
    out = capsys.readouterr().out
    assert "judge: up to date" in out and "digest not checked" in out
    # Unless the judge is asked to run again.
    assert command("judge", *settings, f"judge.host={url}", extra=("--force",)) == 1
    assert "cannot reach Ollama" in one_error_line(capsys)


def test_bases_judged_together_check_the_judge_only_while_the_judgment_is_due(
        run_env, instruction_data, book_responses, gpt2_tokenizer, capsys):
    settings = [f"data.source={instruction_data}", f"generate.from_file={book_responses}",
                'model.bases=["random", "gpt2"]', 'judge.mode="together"']
    with OllamaStandIn(together_judge) as server:
        assert command("evaluate", *settings, f"judge.host={server.url}") == 0
        assert capsys.readouterr().out.startswith(
            f"judge: llama3:latest (digest {STANDIN_DIGEST[:12]}) at {server.url} is ready\n"
            "== run first--random")
        url = server.url
    assert command("evaluate", *settings, f"judge.host={url}") == 0
    assert "together: up to date" in capsys.readouterr().out
    # A change of judge settings makes the together judgment due: the check stops it.
    assert command("evaluate", *settings, f"judge.host={url}", "judge.swap=true") == 1
    assert "cannot reach Ollama" in one_error_line(capsys)


# -- 3. evalpipe doctor -------------------------------------------------------------------------

def expected_head() -> list[str]:
    import torch

    return [f"ok       python       {platform.python_version()}",
            f"ok       torch        {torch.__version__}"]


def smoke(*settings: str):
    return load_config(SMOKE, list(settings)), default_paths("first")


def doctor(*settings: str, capsys) -> tuple[int, list[str]]:
    code = command("doctor", *settings)
    return code, capsys.readouterr().out.splitlines()


def test_doctor_smoke_config_with_a_judge_is_ready(run_env, instruction_data, gpt2_tokenizer,
                                                   ollama, capsys):
    cache = os.environ["TIKTOKEN_CACHE_DIR"]
    code, lines = doctor(f"data.source={instruction_data}", f"judge.host={ollama.url}",
                         capsys=capsys)
    assert lines[:2] == expected_head()
    assert lines[2].startswith("ok       device       CPU (")  # this machine's
    assert lines[3:7] == [
        f"ok       tokenizer    GPT-2's vocab.bpe and encoder.json in {cache}",
        f"ok       data         {instruction_data}",
        "ok       base random  random weights: nothing to download",
        f"ok       judge        llama3:latest (digest {STANDIN_DIGEST[:12]}) at {ollama.url}"
        + " is ready",
    ]
    # The smoke model's 3.3 million parameters, 16 bytes each: 53 MB.
    assert re.fullmatch(r"ok       disk         \d+\.\d GB free for "
                        + re.escape(str(run_env / "results")) + ", about 0.1 GB needed",
                        lines[7]), lines[7]
    assert lines[8:] == ["ready: everything the run needs is here"]
    assert code == 0


def test_doctor_names_the_fix_for_a_judge_server_that_is_down(
        run_env, instruction_data, gpt2_tokenizer, capsys):
    down = unused_url()
    code, lines = doctor(f"data.source={instruction_data}", f"judge.host={down}", capsys=capsys)
    assert lines[6] == (f"MISSING  judge        cannot reach Ollama at {down}: is it running? "
                        "-- fix: ollama serve")
    assert lines[-1] == "not ready: judge missing"
    assert code == 1


def test_doctor_names_the_fix_for_a_model_not_pulled(run_env, instruction_data, gpt2_tokenizer,
                                                     capsys):
    with OllamaStandIn(book_judge, models={}) as server:
        code, lines = doctor(f"data.source={instruction_data}", f"judge.host={server.url}",
                             capsys=capsys)
    assert lines[6] == (f"MISSING  judge        Ollama at {server.url} has no model 'llama3' "
                        "-- fix: ollama pull llama3")
    assert code == 1


def test_doctor_names_the_fix_for_a_missing_data_file(run_env, gpt2_tokenizer, ollama, capsys):
    code, lines = doctor("data.source=nowhere/instruction-data.json",
                         f"judge.host={ollama.url}", capsys=capsys)
    assert lines[4] == ("MISSING  data         data.source: nowhere/instruction-data.json not "
                        "found -- fix: --set data.source=PATH of instruction-data.json")
    assert lines[-1] == "not ready: data missing"
    assert code == 1


def test_doctor_names_the_fix_for_a_missing_tokenizer_folder(
        run_env, instruction_data, ollama, capsys, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(run_env / "no-tiktoken"))
    code, lines = doctor(f"data.source={instruction_data}", f"judge.host={ollama.url}",
                         capsys=capsys)
    assert lines[3] == (f"MISSING  tokenizer    no vocab.bpe or encoder.json of GPT-2 in "
                        f"{run_env / 'no-tiktoken'} -- fix: {TIKTOKEN_RECIPE}")
    assert lines[-1] == "not ready: tokenizer missing"
    assert code == 1


def test_tokenizer_check_reads_tiktokens_own_cache_rule(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "6d1cbeee0f20b3d9449abfede4726ed8212e3aee").write_text("bpe")
    assert tokenizer_check({"DATA_GYM_CACHE_DIR": str(folder)}) == Check(
        "tokenizer", False, f"no encoder.json of GPT-2 in {folder}", TIKTOKEN_RECIPE)
    (folder / "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6").write_text("{}")
    assert tokenizer_check({"TIKTOKEN_CACHE_DIR": str(folder)}).ok
    default = Path(tempfile.gettempdir()) / "data-gym-cache"
    assert str(default) in tokenizer_check({}).detail


def test_a_url_source_is_there_once_downloaded(run_env):
    url = "https://example.org/data/instruction-data.json"
    config, paths = smoke(f"data.source={url}")
    raw = run_env / "datasets/raw" / (hashlib.sha256(url.encode()).hexdigest()[:8]
                                      + "-instruction-data.json")
    assert data_check(config, paths) == Check(
        "data", False, f"{url} not downloaded yet (to {raw})",
        "evalpipe prepare (online), or --set data.source=PATH of a local copy")
    raw.parent.mkdir(parents=True)
    raw.write_text("[]")
    assert data_check(config, paths) == Check("data", True, f"{url} downloaded to {raw}")


def test_base_weights_are_looked_for_in_the_hugging_face_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    assert base_check("gpt2-medium", cache_dir=cache) == Check(
        "base gpt2-medium", False, "openai-community/gpt2-medium: config.json and "
        "model.safetensors not in the Hugging Face cache",
        "huggingface-cli download openai-community/gpt2-medium config.json model.safetensors")
    assert base_check("hf:me/mine", "v2", cache_dir=cache).fix == \
        "huggingface-cli download me/mine config.json model.safetensors --revision v2"
    # The cache's layout: refs/main names the commit, snapshots/<commit>/ holds the files.
    repo = cache / "models--openai-community--gpt2-medium"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert base_check("gpt2-medium", cache_dir=cache).detail == (
        "openai-community/gpt2-medium: model.safetensors not in the Hugging Face cache")
    (repo / "snapshots" / commit / "model.safetensors").write_text("weights")
    assert base_check("gpt2-medium", cache_dir=cache) == Check(
        "base gpt2-medium", True, "openai-community/gpt2-medium in the Hugging Face cache")
    assert list(cache.rglob("*.incomplete")) == []  # nothing was downloaded


def test_a_local_base_must_exist(tmp_path):
    assert base_check(str(tmp_path / "mine.pth")) == Check(
        f"base {tmp_path / 'mine.pth'}", False, f"{tmp_path / 'mine.pth'} not found",
        "--set model.base=PATH of the weights")
    (tmp_path / "mine.pth").write_bytes(b"x")
    assert base_check(str(tmp_path / "mine.pth")).ok


def test_doctor_says_which_dtype_the_fine_tune_computes_in_and_why():
    slow_cpu, fast_cpu = "flags\t\t: fpu avx2\n", "flags\t\t: fpu avx2 avx512_bf16\n"
    config, _ = smoke("finetune.device=cpu")
    where = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    assert device_check(config, slow_cpu).detail == (
        f"{where}, fine-tunes in float32 (auto: the CPU has no AVX-512 BF16 or AMX) "
        "(finetune.device = 'cpu')")
    assert device_check(config, fast_cpu).detail == (
        f"{where}, fine-tunes in bfloat16 (auto: the CPU has avx512_bf16) "
        "(finetune.device = 'cpu')")
    config, _ = smoke("finetune.device=cpu", "finetune.dtype=bfloat16")
    check = device_check(config, slow_cpu)
    assert check.ok and check.detail == (
        f"{where}, fine-tunes in bfloat16 (finetune.dtype = 'bfloat16'); 'auto' would take "
        "float32 (the CPU has no AVX-512 BF16 or AMX) (finetune.device = 'cpu')")


def test_a_device_that_is_not_there_is_missing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config, _ = smoke("finetune.device=cuda")
    assert device_check(config) == Check(
        "device", False, "device 'cuda' asked for, but torch sees no CUDA devices",
        "--set finetune.device=auto")


def test_doctor_lines_put_the_fix_after_what_is_missing():
    assert doctor_lines([Check("python", True, "3.12.1"),
                         Check("judge", False, "down", "ollama serve")]) == [
        "ok       python  3.12.1",
        "MISSING  judge   down -- fix: ollama serve",
        "not ready: judge missing",
    ]


def test_doctor_checks_the_imported_responses_instead_of_weights(run_env, instruction_data,
                                                                 ollama):
    config, paths = smoke(f"data.source={instruction_data}", f"judge.host={ollama.url}",
                          "generate.from_file=gone.json")
    whats = [(check.what, check.ok) for check in doctor_checks(config, paths)]
    assert ("responses", False) in whats
    assert not any(what.startswith("base") for what, _ in whats)


# -- 6. evalpipe open ---------------------------------------------------------------------------

@pytest.fixture
def opened(monkeypatch):
    urls = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: urls.append(url) or True)
    return urls


def test_open_prints_the_report_and_opens_it(run_env, opened, capsys):
    page = run_env / "results/mine/aggregate/report.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    assert main(["open", "mine"]) == 0
    assert capsys.readouterr().out == f"{run_env / 'results/mine/aggregate/report.html'}\n"
    assert opened == [page.resolve().as_uri()]


def test_open_a_comparison(run_env, opened, capsys):
    page = run_env / "results/compare-a-vs-b/compare.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    assert main(["open", "compare-a-vs-b"]) == 0
    assert opened == [page.resolve().as_uri()]


def test_open_defaults_to_the_config_files_run(run_env, opened):
    page = run_env / "results/smoke/aggregate/report.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    assert main(["open", "--config", str(SMOKE)]) == 0
    assert opened == [page.resolve().as_uri()]


def test_open_a_page_not_made_yet_says_which_command_makes_it(run_env, opened, capsys):
    assert main(["open", "mine"]) == 1
    assert one_error_line(capsys) == (
        f"evalpipe: error: no page yet: {run_env / 'results/mine/aggregate/report.html'}; "
        "'evalpipe evaluate --run mine' (or 'evalpipe aggregate') makes it")
    assert main(["open", "compare-x"]) == 1
    assert one_error_line(capsys) == (
        f"evalpipe: error: no page yet: {run_env / 'results/compare-x/compare.html'}; "
        "'evalpipe compare RUN RUN ... --name x' makes it")
    assert opened == []


def test_the_llamacpp_judge_is_checked_without_loading_the_model(tmp_path):
    """The stage loads the GGUF anyway: the check reads its digest only (a file that is no
    model passes it; loading it would fail), and a missing file is the stage's one line."""
    import hashlib

    from evalpipe.config import JudgeConfig
    from evalpipe.doctor import judge_ready
    from evalpipe.judging.backends import JudgeError

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"not a model")
    digest = hashlib.sha256(b"not a model").hexdigest()[:12]
    settings = JudgeConfig(backend="llamacpp", model=str(gguf))
    assert judge_ready(settings, pull=True) == (
        f"judge: judge.gguf (digest {digest}) at {gguf} is ready")
    with pytest.raises(JudgeError, match=r"^judge\.model: GGUF file not found: .*nothing\.gguf$"):
        judge_ready(JudgeConfig(backend="llamacpp", model=str(tmp_path / "nothing.gguf")))
