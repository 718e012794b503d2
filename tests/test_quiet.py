"""bitsandbytes' CPU notices stay off the learner's screen; every other message still shows."""

import logging
import subprocess
import sys

from lora_kata.models.quiet import NOTICES, silence_bitsandbytes_cpu_notices
from tests.kata_harness import REPO, clean_env


def _passes(logger_name: str, message: str) -> bool:
    record = logging.LogRecord(logger_name, logging.WARNING, __file__, 1, message, (), None)
    return logging.getLogger(logger_name).filter(record)


def test_exactly_the_two_notices_are_dropped():
    silence_bitsandbytes_cpu_notices()
    silence_bitsandbytes_cpu_notices()  # idempotent
    for name, prefix in NOTICES:
        assert not _passes(name, prefix + " torch.float32 ..."), f"{prefix!r} still shows"
        assert _passes(name, "Something else went wrong"), (
            f"only the CPU notice may be dropped from {name}, not its other warnings"
        )
        filters = [f for f in logging.getLogger(name).filters if getattr(f, "prefix", None)]
        assert len(filters) == 1, f"calling it twice added {len(filters)} filters to {name}"


def test_the_watch_worker_imports_bitsandbytes_without_the_notices():
    done = subprocess.run(
        [sys.executable, "-c", "from lora_kata.cli import worker; worker.preload(); import peft"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for _, prefix in NOTICES:
        assert prefix not in done.stdout + done.stderr, f"{prefix!r} reached the screen"
