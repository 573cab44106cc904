"""Benchmark: the judge stage against a stand-in Ollama server with a fixed latency.

    python bench/judge.py                                  # 40 items, 50 ms, 4 server slots
    python bench/judge.py --items 110 --latency 0.2 --concurrency 1,4,8

The stand-in (tests/standins.py: real HTTP, driven through the real `ollama` client) answers
every chat request after `--latency` seconds and serves at most `--server-slots` requests at
once, as an Ollama server with OLLAMA_NUM_PARALLEL=4 would. Each concurrency setting judges the
same items with an empty judgment cache; the last run is repeated with the cache it filled
(every reply cached: the judge is not asked). Canaries are off so that every request is an item.
The figures are for the stage's own overhead and its use of a parallel server, not for a model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from standins import OllamaStandIn, book_judge  # noqa: E402

from evalpipe.config import load_config  # noqa: E402
from evalpipe.io import read_jsonl, write_jsonl  # noqa: E402
from evalpipe.stages import judge  # noqa: E402
from evalpipe.stages.pipeline import RunPaths  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--server-slots", type=int, default=4,
                        help="requests the stand-in serves at once")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated judge.concurrency")
    return parser.parse_args()


def make_items(n: int) -> list[dict]:
    return [{"id": f"{i:012x}", "instruction": f"Name a word that rhymes with 'cat' ({i}).",
             "input": "", "output": "A word that rhymes with cat is hat.",
             "response": "Hat rhymes with cat." if i % 2 else "The word is bat.",
             "prompt_tokens": None, "response_tokens": 6, "stop_reason": "imported",
             "seconds": None} for i in range(n)]


def run_stage(root: Path, concurrency: int, url: str, cache: Path) -> float:
    """One judge stage run; returns its wall time in seconds."""
    config = load_config(None, [f"judge.host={url}", f"judge.concurrency={concurrency}",
                                "judge.canaries=false", f"judge.cache={cache}"])
    paths = RunPaths(results=root, run="bench")
    clock = time.monotonic()
    with redirect_stdout(StringIO()):  # the stage's summary line; tqdm writes to stderr
        judge.run(config, paths)
    seconds = time.monotonic() - clock
    states = {r["state"] for r in read_jsonl(paths / "judge/scores.jsonl")}
    assert states == {"scored"}, states
    return seconds


def main():
    args = parse_args()
    slots = threading.BoundedSemaphore(args.server_slots)

    def parallel_server(body):
        with slots:  # more requests than slots wait, as they do in Ollama's queue
            time.sleep(args.latency)
        return book_judge(body)

    os.environ.setdefault("TQDM_DISABLE", "1")
    import ollama  # noqa: E401, F401 - imported before the clock starts, not in the first run

    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"judge stage, {args.items} items, stand-in Ollama with {args.latency * 1000:.0f} ms "
          f"per request and {args.server_slots} slots; {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, {dt.date.today()}")
    with OllamaStandIn(parallel_server) as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jsonl(root / "bench/generate/responses.jsonl", make_items(args.items))
        timings = {}
        for level in levels:
            cache = root / f"cache-{level}.sqlite"
            timings[level] = run_stage(root, level, server.url, cache)
            print(f"  concurrency {level:>2}: {timings[level]:6.2f} s  "
                  f"{args.items / timings[level]:7.1f} items/s  "
                  f"x{timings[levels[0]] / timings[level]:.2f} vs concurrency {levels[0]}")
        asked = len(server.requests)
        cached = run_stage(root, levels[-1], server.url, root / f"cache-{levels[-1]}.sqlite")
        assert len(server.requests) == asked, "the cached rerun asked the judge"
        print(f"  cached rerun  : {cached:6.2f} s  {args.items / cached:7.1f} items/s  "
              f"x{timings[levels[0]] / cached:.1f} vs concurrency {levels[0]}")


if __name__ == "__main__":
    main()
