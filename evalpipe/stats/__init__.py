"""Statistics, pure functions on numbers: descriptive statistics and bootstrap intervals
(describe, re-exported here), paired comparisons of two models (paired), and how sure a
comparison of several models is over items, seeds and judge repeats (uncertainty), and
Bradley-Terry ratings from pairwise verdicts (bradley_terry; not imported here). A new
statistic goes here, with its edge cases documented."""

from evalpipe.stats.describe import *  # noqa: F401,F403
