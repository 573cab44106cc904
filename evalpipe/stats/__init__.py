"""Statistics: descriptive (describe) and paired (paired); pure functions on numbers."""

from evalpipe.stats.describe import *  # noqa: F401,F403
