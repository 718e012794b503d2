"""Every `lora-kata` command, given bad input or a closed pipe, prints a message, never a
traceback: an unknown exercise, an exercise without that feature, no progress file yet, a
reader that leaves early (`| head`), and a folder that is not a kata checkout."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.kata_harness import REPO, clean_env, copy_kata

pytestmark = pytest.mark.xdist_group("cli-errors")


def _run(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lora_kata", *args],
        cwd=cwd,
        env=clean_env(LORA_KATA_LANG="en"),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("hint", "99"), "no exercise '99'"),
        (("lesson", "99"), "no exercise '99'"),
        (("reset", "99"), "no exercise '99'"),
        (("try", "99"), "no experiment for 99"),
        (("try", "04"), "no experiment for 04"),  # 04's lesson has no experiment
    ],
)
def test_bad_input_is_a_message_and_exit_2(args, says):
    done = _run(*args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert says in done.stdout + done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


def test_commands_before_any_run_say_there_is_no_progress_yet(tmp_path):
    tree = copy_kata(tmp_path)
    for args in (("report",), ("report", "--all"), ("hint",)):
        done = _run(*args, cwd=tree)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    report = _run("report", cwd=tree)
    assert "No progress yet" in report.stdout + report.stderr, report.stdout + report.stderr


@pytest.mark.parametrize("args", [("lesson", "02"), ("report", "--all"), ("list",)])
def test_a_reader_that_leaves_early_is_no_error(args):
    child = subprocess.Popen(
        [sys.executable, "-m", "lora_kata", *args],
        cwd=REPO,
        env=clean_env(LORA_KATA_LANG="en", PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.readline()
    child.stdout.close()  # `| head -1`
    stderr = child.stderr.read().decode()
    child.wait(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_outside_a_kata_checkout_it_says_where_to_run_it(tmp_path):
    done = _run("report", cwd=tmp_path)
    assert done.returncode == 2
    assert "is not one" in done.stderr and "cd into your kata checkout" in done.stderr
    assert "Traceback" not in done.stderr


def test_commands_read_the_kata_in_the_current_folder_not_the_installed_one(tmp_path):
    tree = copy_kata(tmp_path)
    catalog = tree / "lora_kata" / "catalog" / "01_lora_layer.toml"
    text = catalog.read_text(encoding="utf-8")
    title = re.search(r"^\[title\]\nen = .*$", text, re.MULTILINE).group(0)
    catalog.write_text(text.replace(title, '[title]\nen = "A title only this copy has"'))
    # As the `lora-kata` script installed from this checkout runs it (-P: the current folder is
    # not on sys.path, so this checkout's lora_kata is imported), inside the copy.
    command = "from lora_kata.cli import main; raise SystemExit(main(['list']))"
    done = subprocess.run(
        [sys.executable, "-P", "-c", command],
        cwd=tree,
        env=clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "A title only this copy has" in done.stdout, done.stdout + done.stderr
