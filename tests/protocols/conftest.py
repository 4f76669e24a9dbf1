"""Hypothesis profiles for the protocol fuzz tests.

``HYPOTHESIS_PROFILE=deep`` runs many more examples (for a long soak);
the default ``fast`` keeps the suite quick on the shared 2-core machine.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("fast", max_examples=150, deadline=None)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
