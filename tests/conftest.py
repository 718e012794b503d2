"""The quality suite: checks the kata itself (exercises, solutions, runner, catalogue).

A learner who types plain `pytest` at the root means the kata: they get one line saying so,
instead of ten minutes of the quality suite failing on their work in progress. The suite runs
when asked for: a path (`pytest tests/`), LORA_KATA_QUALITY=1, or in CI (CI=true).
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the kata may touch the network

QUALITY_VARIABLES = ("LORA_KATA_QUALITY", "CI")


def _asked_for_the_quality_suite(config: pytest.Config) -> bool:
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return True  # paths were given: the suite, or part of it, on purpose
    for name in QUALITY_VARIABLES:
        if os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no"):
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if _asked_for_the_quality_suite(config):
        return None
    from lora_kata.messages import t
    from lora_kata.messages.language import language

    print(t("kata is", language()))
    return int(pytest.ExitCode.USAGE_ERROR)
