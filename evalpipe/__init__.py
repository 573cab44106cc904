"""evalpipe: measure how well an instruction-fine-tuned GPT-2 follows instructions, judged by an LLM.

The notebook interface (evalpipe/api.py) is exported here lazily (PEP 562): `import evalpipe`
stays light, and pandas and the stages are imported on the first use of one of these names.
"""

__version__ = "0.1.0"

API = ("load_scores", "load_summary", "load_leaderboard", "run_stage")
__all__ = [
    "EvalpipeError",
    "__version__",
    "load_leaderboard",
    "load_scores",
    "load_summary",
    "run_stage",
]


def __getattr__(name: str):
    if name in API:
        from evalpipe import api

        return getattr(api, name)
    if name == "EvalpipeError":
        from evalpipe.errors import EvalpipeError

        return EvalpipeError
    raise AttributeError(f"module 'evalpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API, "EvalpipeError"])
