"""Statistics, pure functions on numbers: descriptive statistics and bootstrap intervals
(describe, re-exported here) and paired comparisons of two models (paired). A new statistic
goes here, with its edge cases documented."""

from evalpipe.stats.describe import *  # noqa: F401,F403
