"""`pytest exercises/ -k test_NN` imports only exercise NN's test file (runner/collect.py)."""

import json
import subprocess
import sys

import pytest

from lora_kata.catalog import load_catalog
from lora_kata.runner.collect import keyword_excludes_file
from tests.kata_harness import REPO, clean_env

FILES = {e.id: e.test_file for e in load_catalog()}


@pytest.mark.parametrize(
    ("keyword", "kept"),
    [
        ("test_01", {"01"}),
        ("test_02 or test_03", {"02", "03"}),
        ("not test_01", set(FILES) - {"01"}),
        ("test_01 and scaling", {"01"}),
        ("test_10", {"10"}),
    ],
)
def test_a_keyword_naming_exercises_keeps_exactly_their_files(keyword, kept):
    found = {i for i, path in FILES.items() if not keyword_excludes_file(keyword, path)}
    assert found == kept, (
        f"-k {keyword!r} should keep the test files of {sorted(kept)}, kept {sorted(found)}"
    )


@pytest.mark.parametrize("keyword", ["scaling", "lora_A or test_02", "not scaling", "test_01 or x"])
def test_a_keyword_that_may_match_any_test_keeps_every_file(keyword):
    dropped = [i for i, path in FILES.items() if keyword_excludes_file(keyword, path)]
    assert not dropped, (
        f"-k {keyword!r} could select tests in any file, yet files {dropped} would be skipped "
        "unread: only names like test_NN may decide a file"
    )


def test_an_unreadable_keyword_or_file_keeps_the_file(tmp_path):
    assert not keyword_excludes_file("test_01 and (", FILES["02"]), "a bad -k must reach pytest"
    assert not keyword_excludes_file("test_01", tmp_path / "test_02_missing.py"), (
        "a file that cannot be read must be left to pytest"
    )


def test_a_file_that_mentions_the_name_is_kept(tmp_path):
    path = tmp_path / "test_02_other.py"
    path.write_text("def test_01_lookalike():\n    pass\n", encoding="utf-8")
    assert not keyword_excludes_file("test_01", path), (
        "a test in another file whose name contains test_01 would match -k test_01: keep it"
    )


def test_k_test_nn_does_not_import_the_other_exercises_test_files():
    probe = (
        "import sys, pytest\n"
        "pytest.main(['exercises/', '-k', 'test_03', '--collect-only', '-q', "
        "'--no-kata-report', '-p', 'no:cacheprovider'])\n"
        "import json\n"
        "print('IMPORTED', json.dumps(sorted(n.rsplit('.', 1)[-1] for n in sys.modules "
        "if n.rsplit('.', 1)[-1].startswith('test_'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=clean_env(LORA_KATA_IMPL="solutions"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("IMPORTED")), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    imported = set(json.loads(line.removeprefix("IMPORTED ")))
    others = {n for n in imported if n.startswith("test_") and not n.startswith("test_03")}
    assert any(n.startswith("test_03") for n in imported), f"03's file was not collected: {line}"
    assert not others, f"-k test_03 imported other exercises' test files: {sorted(others)}"
