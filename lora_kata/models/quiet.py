"""Keep bitsandbytes' CPU notices off the learner's screen (docs/developing.md says why
they are harmless). Only these two messages are dropped; every other warning still shows."""

from __future__ import annotations

import logging

# (logger, the message's fixed start). Both are logging calls, not warnings.warn.
NOTICES = (
    # bitsandbytes >= 0.49 on a CPU with AVX512-BF16: an optional 4-bit kernel from the
    # `kernels` package could not be fetched (offline, or not installed); it falls back.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels"),
    # Linear8bitLt on the CPU quantizes fp32 inputs through fp16, once per matmul.
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from"),
)


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_bitsandbytes_cpu_notices() -> None:
    """Idempotent; works before or after bitsandbytes is imported (filters sit on loggers)."""
    for name, prefix in NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))
