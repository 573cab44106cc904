"""bench/pipeline.py runs end to end on a tiny model and ends with the ratio of the totals."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_pipeline_benchmark_prints_phases_memory_and_the_ratio_last(instruction_data,
                                                                       gpt2_tokenizer):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench/pipeline.py"), "--data", str(instruction_data),
         "--preset", "gpt2", "--layers", "1", "--emb-dim", "48", "--steps", "2",
         "--naive-prompts", "1", "--prompts", "2", "--max-new-tokens", "2",
         "--dtype", "float32", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    number = r"\d+\.\d"
    for phase in ("prepare", "finetune", "generate", "total"):
        assert any(re.fullmatch(rf"{phase} +{number}s +{number}s +{number}\dx", line)
                   for line in lines), (phase, result.stdout)
    assert re.fullmatch(rf"peak memory +{number}\dGB +{number}\dGB", lines[-2])
    assert "evalpipe float32: computes in float32 (finetune.dtype = 'float32'), 1 torch " \
        "threads" in lines
    assert re.search(r"^evalpipe float32: prepare .* generate .* for 110 prompts \(2 prompts, "
                     r"4 tokens in", result.stdout, re.MULTILINE)
    # The last line is the total's ratio (to 2 decimals in the table), to 1 decimal.
    ratio = re.search(rf"total +{number}s +{number}s +({number}\d)x", result.stdout).group(1)
    last = re.fullmatch(rf"end-to-end speed-up: ({number})x", lines[-1])
    assert last and abs(float(last.group(1)) - float(ratio)) <= 0.051
