"""Fail unless the active environment is exactly requirements.lock (plus the kata itself).

Run by .ci/run right after the install: a dependency added to pyproject.toml without refreshing
the lock installs unpinned, and a stale pin would be silently overridden; both are named here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
IGNORED = {"pip", "setuptools", "wheel", "lora-kata"}  # the installer's own, and the kata


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    return {
        canonical(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonical(d.metadata["Name"]) not in IGNORED
    }


def main() -> int:
    pins, have = locked(), installed()
    problems = []
    for name, version in sorted(have.items()):
        want = pins.get(name)
        if want is None:
            problems.append(f"{name}=={version} is installed but not in the lock")
        elif version.split("+")[0] != want:  # torch 2.13.0+cpu is torch==2.13.0
            problems.append(f"{name}: the lock says {want}, {version} is installed")
    problems += [
        f"{name}=={pins[name]} is in the lock but not installed"
        for name in pins.keys() - have.keys()
    ]
    if problems:
        print("The environment is not requirements.lock:", *problems, sep="\n  ", file=sys.stderr)
        print('Refresh the lock as docs/developing.md says ("The lock").', file=sys.stderr)
        return 1
    print(f"environment = requirements.lock ({len(pins)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
