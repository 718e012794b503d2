"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (never forced at import).

- dev (default): few examples, so a learner's run stays quick.
- ci: derandomized (the same examples every run) and more of them; no deadline, because
  the first call into torch on a cold CPU can take longer than any sensible deadline.
- thorough: many examples, for an instructor hunting edge cases.

Importing Hypothesis costs about a second, so this module does not: the runner calls
`register_and_load` right after a test file imports Hypothesis (lora_kata.runner.post_import), and
exercises whose tests never use it never pay for it.
"""

from __future__ import annotations

import os

PROFILES = {
    "dev": dict(max_examples=15, deadline=None),
    "ci": dict(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=False),
    "thorough": dict(max_examples=400, deadline=None),
}


def profile_name() -> str:
    """The profile HYPOTHESIS_PROFILE asks for; a clear error for an unknown one."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    if name not in PROFILES:
        raise ValueError(
            f"HYPOTHESIS_PROFILE={name!r} is not one of the kata's profiles {sorted(PROFILES)}"
        )
    return name


def register_and_load(_module: object = None) -> str:
    from hypothesis import HealthCheck, Phase, settings

    # No "explain" phase: it writes patch files and long notes a learner does not need.
    phases = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
    for name, options in PROFILES.items():
        settings.register_profile(
            name, suppress_health_check=[HealthCheck.too_slow], phases=phases, **options
        )
    name = profile_name()
    settings.load_profile(name)
    return name
