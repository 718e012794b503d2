"""`must_raise`: pytest.raises whose failure speaks the learner's language.

pytest.raises fails with its own English "DID NOT RAISE <class 'ValueError'>"; an exercise
test says instead what call should have been refused and why (a keyed message, see
lora_kata/messages). Everything else is as with pytest.raises: an exception of another type
(the stub's NotImplementedError included) goes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass
class Raised:
    """What the block raised (`value`), once it has."""

    value: BaseException | None = None


@contextmanager
def must_raise(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    message: str,
    instead: Callable[[Exception], str] | None = None,
) -> Iterator[Raised]:
    """The block must raise `expected`; if it raises nothing the test fails with `message`.

    With `instead`, another exception (say a KeyError from deep inside, where a ValueError
    should have refused the input up front) fails the test with `instead(error)`, a message
    that names the mistake; without it, or for the stub's NotImplementedError, it goes through.
    """
    raised = Raised()
    try:
        yield raised
    except expected as error:
        raised.value = error
        return
    except NotImplementedError:
        raise
    except Exception as error:
        if instead is None:
            raise
        pytest.fail(instead(error), pytrace=False)
    pytest.fail(message, pytrace=False)
