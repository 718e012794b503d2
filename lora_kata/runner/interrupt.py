"""Ctrl-C: the run records what finished, says "interrupted", and pytest gets to say so too.

On Python 3.11 a KeyboardInterrupt can arrive at an instruction that maps to no line, so a
traceback entry has `tb_lineno` None; pytest's own Ctrl-C hook then fails formatting it
(`None - 1`), the run ends in an INTERNALERROR and nothing is recorded (seen once in CI, under
load). Before pytest formats it, such entries are dropped from the traceback.
"""

from __future__ import annotations

import types

import pytest


def _without_lineless_entries(tb: types.TracebackType | None) -> types.TracebackType | None:
    entries = []
    while tb is not None:
        if tb.tb_lineno is not None:
            entries.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for entry in reversed(entries):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo) -> None:
    tb = excinfo.tb
    clean = _without_lineless_entries(tb)
    if clean is tb or clean is None:
        return
    error = excinfo.value.with_traceback(clean)
    # pytest internals (ExceptionInfo's fields): if they moved, leave everything as it is.
    try:
        excinfo._excinfo = (type(error), error, clean)
        excinfo._traceback = None
    except AttributeError:
        pass
