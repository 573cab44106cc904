"""evalpipe: measure how well an instruction-fine-tuned GPT-2 follows instructions, judged by an LLM."""

__version__ = "0.1.0"
