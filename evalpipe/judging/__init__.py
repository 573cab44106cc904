"""Asking judges: one module per judge backend behind one interface (backends), the prompts and
the rule that reads a score from a reply (prompts), the judgment cache (cache), what single and
together judging share (engine: asking, retries, prompt sizes, the ask-and-write-down loop),
and judging several runs' responses in one prompt (together). A new judge backend goes in
backends/; a new prompt in prompts.py."""
