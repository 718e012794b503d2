"""must_raise: pytest.raises whose failures are the test's own (keyed) messages."""

from __future__ import annotations

import pytest

from lora_kata.testing.raising import must_raise


def test_the_expected_exception_is_caught_and_kept():
    with must_raise(ValueError, "unused") as raised:
        raise ValueError("r must be >= 1")
    assert str(raised.value) == "r must be >= 1", f"kept {raised.value!r}"


def test_nothing_raised_fails_with_the_message():
    with pytest.raises(pytest.fail.Exception) as failed:
        with must_raise(ValueError, "r=0 was accepted"):
            pass
    assert str(failed.value) == "r=0 was accepted", f"failed with {failed.value}"


def test_another_exception_goes_through_unless_instead_names_it():
    with pytest.raises(KeyError):
        with must_raise(ValueError, "unused"):
            raise KeyError("deep inside")
    with pytest.raises(pytest.fail.Exception) as failed:
        with must_raise(ValueError, "unused", instead=lambda e: f"late {type(e).__name__}"):
            raise KeyError("deep inside")
    assert str(failed.value) == "late KeyError", f"failed with {failed.value}"


def test_the_stubs_not_implemented_error_always_goes_through():
    with pytest.raises(NotImplementedError):
        with must_raise(ValueError, "unused", instead=lambda e: "never"):
            raise NotImplementedError("Exercise 09: load_adapter")
