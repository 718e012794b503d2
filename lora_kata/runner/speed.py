"""What a learner's rerun of `pytest exercises/` does not pay for (docs/developing.md, "The
feedback loop"): pytest internals trimmed, and datasets' map cache, which would serve stale
results, switched off."""

from __future__ import annotations

import pytest


def no_map_cache(datasets_module) -> None:
    # datasets fingerprints a mapped function by its own code only: a helper it calls is
    # referred to by name, so after the learner fixes the helper `map` would serve the old,
    # cached result. Kata runs therefore never reuse a map cache.
    datasets_module.disable_caching()


# Distributions whose modules pytest marks for assertion rewriting because they ship a pytest
# plugin: rewriting Hypothesis's ~80 library modules costs a second or more on every run where
# bytecode is not cached (PYTHONDONTWRITEBYTECODE), and no test asserts inside them.
NOT_REWRITTEN = ("hypothesis", "_hypothesis_pytestplugin", "_hypothesis_globals")


def lighter_pytest(config: pytest.Config) -> None:
    """Two pytest costs a learner pays on every run for nothing (pytest internals: if they
    moved, leave everything as it is)."""
    try:
        from _pytest.assertion.rewrite import assertstate_key

        hook = config.stash[assertstate_key].hook
        must_rewrite = hook._must_rewrite
        if isinstance(must_rewrite, set):
            must_rewrite.difference_update(NOT_REWRITTEN)
            hook._marked_for_rewrite_cache.clear()
    except (ImportError, KeyError, AttributeError):
        pass
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key

        # Five full garbage collections at exit (with torch loaded, 0.1-0.5 s each) only to
        # find exceptions raised in __del__ of garbage: nothing the kata's report shows.
        config.stash[gc_collect_iterations_key] = 0
    except ImportError:
        pass
