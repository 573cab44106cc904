"""No secret reaches results/ or the terminal: the judge's API key (judge.api_key or
OPENAI_API_KEY) and the password of a host given as http://user:password@host.

The smoke configuration runs stage by stage with the openai backend against the stand-in
OpenAI server, which refuses any request without the right key (so the key is really used),
then compare; a host with a password provokes errors that name the host. Then every byte
written under the results folder and everything printed is searched for the secrets.
"""

from pathlib import Path

from standins import OpenAIStandIn, unused_url

from evalpipe.cli import main

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.toml"
API_KEY = "sk-planted-4f1e9c0b7d2a"
PASSWORD = "hunter2-planted-pw"


def with_password(url: str) -> str:
    """http://127.0.0.1:PORT/v1 as http://judge:PASSWORD@127.0.0.1:PORT/v1."""
    return url.replace("http://", f"http://judge:{PASSWORD}@", 1)


def test_no_secret_is_written_or_printed(run_env, instruction_data, gpt2_tokenizer, capsys,
                                         monkeypatch):
    printed = []

    def run(command: str, *settings: str, force: bool = False) -> int:
        args = [*command.split(), "--config", str(SMOKE), "--run", "smoke"]
        for setting in (f"data.source={instruction_data}", "judge.backend=openai",
                        "judge.model=judge-8b", *settings):
            args += ["--set", setting]
        code = main(args + (["--force"] if force else []))
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err)
        return code

    with OpenAIStandIn(models=["judge-8b"], api_key=API_KEY) as standin:
        keyed = (f"judge.host={standin.url}", f"judge.api_key={API_KEY}")
        for stage in ("prepare", "finetune", "generate", "judge", "aggregate", "status"):
            assert run(stage, *keyed) == 0, printed[-1]
        assert main(["compare", "smoke"]) == 0
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err)

        # The key from the environment, and a host whose password the server does not want
        # (the client sends it as Basic auth instead of the key): refused, naming the host.
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        assert run("judge", f"judge.host={with_password(standin.url)}", force=True) == 1
        assert "refused the API key" in printed[-1]
        assert f"http://judge:***@{standin.url[len('http://'):]}" in printed[-1]
    down = unused_url()
    assert run("judge", f"judge.host={with_password(down)}/v1", force=True) == 1
    assert f"http://judge:***@{down[len('http://'):]}/v1" in printed[-1]
    # Past the check before long work, the judge stage writes config.toml, then stops.
    assert run("judge --no-judge-check", f"judge.host={with_password(down)}/v1",
               force=True) == 1
    assert f"http://judge:***@{down[len('http://'):]}/v1" in printed[-1]
    assert (run_env / "results/smoke/aggregate/report.html").exists()

    files = [path for path in (run_env / "results").rglob("*") if path.is_file()]
    assert len(files) > 20
    leaks = [str(path) for path in files for secret in (API_KEY, PASSWORD)
             if secret.encode() in path.read_bytes()]
    assert leaks == []
    assert [text for text in printed if API_KEY in text or PASSWORD in text] == []
    config = (run_env / "results/smoke/config.toml").read_text(encoding="utf-8")
    assert 'api_key = ""' in config
    assert f'host = "http://judge:***@{down[len("http://"):]}/v1"' in config


def test_ollama_hosts_with_a_password_are_masked(run_env, instruction_data, book_responses,
                                                 gpt2_tokenizer, capsys):
    """judge.hosts (several servers) with passwords, all down: the error names them masked,
    and config.toml lists every host masked."""
    first, second = unused_url(), unused_url()
    hosts = [with_password(first), with_password(second)]
    masked = [url.replace("http://", "http://judge:***@", 1) for url in (first, second)]
    # The check before long work, then (skipped) the judge stage's own preflight.
    for check in ([], ["--no-judge-check"]):
        assert main(["evaluate", *check, "--config", str(SMOKE), "--run", "smoke",
                     "--set", f"data.source={instruction_data}",
                     "--set", f"generate.from_file={book_responses}",
                     "--set", "judge.hosts=[" + ", ".join(f'"{h}"' for h in hosts) + "]"]) == 1
        captured = capsys.readouterr()
        assert captured.err == (f"evalpipe: error: judge: cannot reach any judge host: "
                                f"{masked[0]}, {masked[1]}\n")
    config = (run_env / "results/smoke/config.toml").read_text(encoding="utf-8")
    assert f'hosts = [\n    "{masked[0]}",\n    "{masked[1]}",\n]' in config
    files = [path for path in (run_env / "results").rglob("*") if path.is_file()]
    assert [str(path) for path in files if PASSWORD.encode() in path.read_bytes()] == []
    assert PASSWORD not in captured.out + captured.err
