"""Shared fixtures: the real reference data in ../shared and an offline GPT-2 tokenizer.

Tests that need ../shared (a user's own clone may not have it) skip with a reason; CI always
has it, and .ci/run fails if they were skipped there (EVALPIPE_REQUIRE_SHARED=1).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EVALPIPE_SHARED", REPO.parent / "shared")) / "data"

# tiktoken names each cached file by the SHA-1 of its URL (see ../shared/data/README.md).
TIKTOKEN_CACHE_NAMES = {
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("EVALPIPE_REQUIRE_SHARED"):
            pytest.fail(f"{path} is missing, and EVALPIPE_REQUIRE_SHARED is set")
        pytest.skip(f"needs {path} (the read-only reference data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def instruction_data() -> Path:
    """The book's 1,100 instruction examples."""
    return _require(SHARED_DATA / "instruction-data.json")


@pytest.fixture(scope="session")
def book_responses() -> Path:
    """The book's 110 test examples with `model_response` from its fine-tuned GPT-2 medium."""
    return _require(SHARED_DATA / "instruction-data-with-response.json")


@pytest.fixture(scope="session")
def gpt2_tokenizer(tmp_path_factory):
    """tiktoken's real GPT-2 encoding, loaded offline from the shared BPE files unless
    TIKTOKEN_CACHE_DIR already points at a cache that has them."""
    import tiktoken

    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not (cache and all((Path(cache) / n).exists() for n in TIKTOKEN_CACHE_NAMES.values())):
        bpe = _require(SHARED_DATA / "gpt2-bpe")
        cache_dir = tmp_path_factory.mktemp("tiktoken-cache")
        for filename, cache_name in TIKTOKEN_CACHE_NAMES.items():
            shutil.copyfile(bpe / filename, cache_dir / cache_name)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return tiktoken.get_encoding("gpt2")


@pytest.fixture
def run_env(tmp_path, monkeypatch):
    """A working folder with its own results/ and datasets/, as a user's checkout has."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALPIPE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("EVALPIPE_DATASETS", str(tmp_path / "datasets"))
    return tmp_path
