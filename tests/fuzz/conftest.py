"""The CI side of the fuzz targets: a few hundred derandomized cases each.

``derandomize=True``: CI runs the same cases on every run, so a red build is
reproducible on a laptop and never flaky; breadth comes from bench/fuzz.py,
which runs 100,000 fresh random cases per target. No example database
either (``database=None``): nothing a developer's earlier run stored changes
what CI checks. A case worth keeping is written down as an ``@example``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # Large generated inputs are the point here, not a sign of a slow strategy.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
