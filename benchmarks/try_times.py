"""Benchmark: how long each `lora-kata try NN` takes, and the demo base's first use.

    python benchmarks/try_times.py                  # every experiment, 2 runs each
    python benchmarks/try_times.py --only 01,08 --repeat 3
    python benchmarks/try_times.py --kata /tmp/old  # another checkout (say, the previous
                                                    # commit from `git archive`), side by side

Each run is `python -m lora_kata try NN --solutions` in a fresh process (imports included, as
a learner types it), with the variables a learner's shell has (no OMP_NUM_THREADS). With
--kata, the runs of the two checkouts alternate, so that both see the same load.

Goals (they live here, never in timed tests):
- every `try NN` ≤ 15 s wall on an idle 2-core machine (on a busy one, read the CPU time:
  user + sys of the process, which waiting for a core does not inflate);
- the demo base's first use (the fp32 copy of data/demo-base/ under .lora_kata/) ≤ 60 s
  (it is seconds: the weights are shipped, nothing is trained).

Output: a table with the load average before and after, then one JSON line (the last line).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_TRY_S = 15.0
GOAL_DEMO_BASE_S = 60.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LORA_KATA_"))}
    env.update(HF_HUB_OFFLINE="1")
    return env


def _timed(command: list[str], cwd: Path) -> dict:
    """Wall and CPU seconds (user + sys of the child) of one command; fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def _experiments(kata: Path) -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "lora_kata", "try"], cwd=kata, env=_env(), capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split()[2] for line in listed.splitlines() if line.startswith("lora-kata try")]


def _demo_base_first_use(kata: Path) -> dict:
    """demo_base_path() with an empty cache: a copy of the kata's data in a temporary folder."""
    code = (
        "import time, sys; from lora_kata.models import demo_base as d; "
        "d.CACHE_ROOT = __import__('pathlib').Path(sys.argv[1]); t = time.perf_counter(); "
        "d.demo_base_path(); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run(
            [sys.executable, "-c", code, cache], cwd=kata, env=_env(), capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1:]}
        return {"call_s": round(float(done.stdout.split()[-1]), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated experiment ids (default: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per experiment")
    parser.add_argument("--kata", help="another checkout to measure side by side")
    args = parser.parse_args()
    katas = {"this": REPO} | ({"other": Path(args.kata).resolve()} if args.kata else {})
    ids = args.only.split(",") if args.only else _experiments(REPO)
    load_before = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {k: {i: [] for i in ids} for k in katas}
    for _ in range(args.repeat):
        for nn in ids:
            for name, kata in katas.items():
                command = [sys.executable, "-m", "lora_kata", "try", nn, "--solutions"]
                with tempfile.TemporaryDirectory() as out:
                    results[name][nn].append(_timed([*command, "--out", out], kata))
    demo = {
        name: _demo_base_first_use(kata)
        if (kata / "data" / "demo-base" / "model.safetensors").is_file()
        else {"not shipped": "pretrained on first use (minutes), not measured"}
        for name, kata in katas.items()
    }
    load_after = os.getloadavg()

    best = {
        name: {nn: {k: min(r[k] for r in runs) for k in ("wall_s", "cpu_s")}
               for nn, runs in per.items()}
        for name, per in results.items()
    }  # fmt: skip
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores); best of {args.repeat}")  # fmt: skip
    header = f"{'try':>4}" + "".join(
        f"  {name + ' wall':>11}  {name + ' cpu':>10}" for name in katas
    )
    print(header)
    print("─" * len(header))
    for nn in ids:
        cells = "".join(
            f"  {best[name][nn]['wall_s']:>11.1f}  {best[name][nn]['cpu_s']:>10.1f}"
            for name in katas
        )
        print(f"{nn:>4}{cells}")
    for name in katas:
        print(f"demo base first use ({name}): {demo[name]}")
    worst = max(best["this"][nn]["wall_s"] for nn in ids)
    worst_cpu = max(best["this"][nn]["cpu_s"] for nn in ids)
    print(f"goal: every try ≤ {GOAL_TRY_S:g} s on an idle machine: worst wall {worst:.1f} s, "
          f"worst CPU {worst_cpu:.1f} s")  # fmt: skip
    print(
        json.dumps(
            {
                "load_before": load_before,
                "load_after": load_after,
                "cores": os.cpu_count(),
                "repeat": args.repeat,
                "best": best,
                "runs": results,
                "demo_base_first_use": demo,
                "goal_try_s": GOAL_TRY_S,
                "goal_demo_base_s": GOAL_DEMO_BASE_S,
                "kata": {name: str(path) for name, path in katas.items()},
                "python": shutil.which("python") and sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
