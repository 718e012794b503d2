"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (never forced at import).

- dev (default): few examples, so a learner's run stays quick.
- ci: derandomized (the same examples every run) and more of them; no deadline, because
  the first call into torch on a cold CPU can take longer than any sensible deadline.
- thorough: many examples, for an instructor hunting edge cases.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

# No "explain" phase: it writes patch files and long notes a learner does not need.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
PROFILES = {
    "dev": dict(max_examples=15, deadline=None),
    "ci": dict(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=False),
    "thorough": dict(max_examples=400, deadline=None),
}


def register_and_load() -> str:
    for name, options in PROFILES.items():
        settings.register_profile(
            name, suppress_health_check=[HealthCheck.too_slow], phases=PHASES, **options
        )
    name = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    if name not in PROFILES:
        raise ValueError(
            f"HYPOTHESIS_PROFILE={name!r} is not one of the kata's profiles {sorted(PROFILES)}"
        )
    settings.load_profile(name)
    return name
