"""The runner room: `pytest exercises/`, from options to the progress report.

    plugin           the pytest hooks exercises/conftest.py loads: options, timeouts, gating
    outcomes         why each test failed (own stub, another stub, broken, timeout, wrong)
    timeouts         one timeout per hung function, not one per test
    collect          `-k test_NN` imports only that exercise's test file
    post_import      configure a heavy library right after a test imports it, never before
    hypothesis_notes the failing example from Hypothesis's note (every wording known today)
    progress         per-test records, per-exercise statuses, the progress JSON
    fingerprint      which files each exercise's result depends on, hashed
    report           the report printed at the end of a run (and by `lora-kata report`)
    splice           find and replace a definition by qualified name (reset, stub checks)

It may import catalog/, messages/, models/ and testing/ (the Hypothesis profiles), never the
capstone, the experiments or the command line.
"""
