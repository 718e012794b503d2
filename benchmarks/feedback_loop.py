"""Benchmark: the learner's feedback loop, measured side by side in one run.

    python benchmarks/feedback_loop.py              # everything (a few minutes on 2 cores)
    python benchmarks/feedback_loop.py --repeat 3   # more pairs per exercise
    python benchmarks/feedback_loop.py --only 01,02 --no-watch --no-full
    python benchmarks/feedback_loop.py --only 01,02,03,04,05 --no-exercises --no-full  # watch

What it measures, and the goals (goals live here, never in timed tests):

- for every exercise NN, `pytest exercises/ --solutions -k test_NN` against its import floor,
  `python -c "import <the libraries NN's tests need>"` (read from the test file and the code it
  reaches, with the environment the kata's runner sets), alternated floor/kata/kata/floor;
  the ratio of the best CPU times (user + sys, the least disturbed by a busy machine), goal
  ≤ 1.5, and of the best wall times;
- for every exercise NN, the loop a learner is usually in, a FAILING exercise: `pytest
  exercises/ -k test_NN` on the reference with NN's first catalogued mistake applied
  (tests/mutants/NN.toml), against the base floor `python -c "import torch, hypothesis,
  pytest"` and against NN's own import floor, alternated; goal ≤ 1.5 against the base floor
  (the comparisons with peft wait until the rest pass, so a failing run does not import it);
- exercise 08's test time (the sum of its tests' durations), goal ≤ 10 s;
- the whole `pytest exercises/ --solutions`, wall and CPU, goal ≤ 20 s (wall, on an idle
  2-core machine: on a busy one read the CPU time);
- `lora-kata watch` on a copy of the kata with the solutions as exercises: for 01-05, save an
  edit to the exercise's module and time save → verdict (the report after the first batch),
  minus the test time of the tests that batch ran, goal ≤ 1.0 s.

Output: a table, then one JSON line (the last line) with every number.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lora_kata.catalog import by_id, load_catalog  # noqa: E402
from lora_kata.runner.fingerprint import dependencies, import_graph  # noqa: E402

GOAL_RATIO = 1.5
GOAL_08_S = 10.0
GOAL_FULL_S = 20.0
GOAL_WATCH_S = 1.0
HEAVY = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "bitsandbytes",
    "accelerate",
    "hypothesis",
    "safetensors",
    "tokenizers",
    "matplotlib",
    "numpy",
)
# What the kata's runner sets before any test imports (lora_kata/runner/plugin.py); the floor
# gets it too, so the comparison is import for import.
KATA_ENV = {"TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LORA_KATA_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(KATA_ENV, **extra)
    return env


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in a file (top level or inside functions)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def floor_modules(exercise_id: str) -> list[str]:
    """The heavy libraries exercise NN's tests need: from its test file, the kata's helpers it
    reaches, and the reference modules it runs (with what they import)."""
    exercise = by_id(exercise_id)
    files = [exercise.test_file]
    graph = import_graph(REPO / "solutions")
    files += [REPO / "solutions" / f"{m}.py" for m in dependencies(exercise, graph)]
    seen: set[Path] = set()
    found: set[str] = {"pytest"}
    while files:
        path = files.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in HEAVY:  # the module as the code imports it (matplotlib.figure, ...)
                found.add(name)
            elif top == "lora_kata":
                local = REPO / Path(*name.split(".")).with_suffix(".py")
                files.append(local)
    if "transformers" in found:  # `import transformers` is lazy; the tests build OPT models
        found = (found - {"transformers"}) | {"transformers.models.opt.modeling_opt"}
    # A package imported with one of its submodules is implied by it.
    return sorted(n for n in found if not any(o.startswith(n + ".") for o in found))


def timed(command: list[str], cwd: Path = REPO, env: dict | None = None) -> dict:
    """Run a command; its wall time and CPU time (user + sys, children included)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "rc": process.returncode,
        "output": output.decode(errors="replace"),
    }


def kata_command(progress: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "exercises/",
        "--solutions",
        "-q",
        "--kata-progress",
        str(progress),
        *args,
    ]


def measure_exercise(exercise_id: str, repeat: int, scratch: Path) -> dict:
    modules = floor_modules(exercise_id)
    floor_cmd = [sys.executable, "-c", "import " + ", ".join(modules)]
    progress = scratch / f"progress-{exercise_id}.json"
    kata_cmd = kata_command(progress, "-k", f"test_{exercise_id}")
    floors, katas = [], []
    for _ in range(repeat):  # ABBA: floor, kata, kata, floor
        floors.append(timed(floor_cmd))
        katas.append(timed(kata_cmd))
        katas.append(timed(kata_cmd))
        floors.append(timed(floor_cmd))
    failed = [k for k in katas if k["rc"] != 0]
    data = json.loads(progress.read_text(encoding="utf-8")) if progress.is_file() else {}
    tests_s = sum(e["time_s"] for e in data.get("exercises", []) if e["id"] == exercise_id)
    best_floor_cpu = min(f["cpu_s"] for f in floors)
    best_kata_cpu = min(k["cpu_s"] for k in katas)
    return {
        "exercise": exercise_id,
        "floor_modules": modules,
        "floor_cpu_s": best_floor_cpu,
        "kata_cpu_s": best_kata_cpu,
        "ratio_cpu": round(best_kata_cpu / best_floor_cpu, 2),
        "floor_wall_s": min(f["wall_s"] for f in floors),
        "kata_wall_s": min(k["wall_s"] for k in katas),
        "ratio_wall": round(min(k["wall_s"] for k in katas) / min(f["wall_s"] for f in floors), 2),
        "tests_s": round(tests_s, 3),
        "ok": not failed,
        "error": failed[0]["output"][-1500:] if failed else None,
    }


BASE_FLOOR = ["torch", "hypothesis", "pytest"]


def measure_failing(exercise_id: str, repeat: int, scratch: Path) -> dict:
    from tests.kata_harness import load_mutants

    mutant = next(m for m in load_mutants() if m.exercise == exercise_id)
    impl = mutant.apply(scratch / f"failing-{exercise_id}")
    base_cmd = [sys.executable, "-c", "import " + ", ".join(BASE_FLOOR)]
    own_cmd = [sys.executable, "-c", "import " + ", ".join(floor_modules(exercise_id))]
    progress = scratch / f"progress-failing-{exercise_id}.json"
    kata_cmd = [sys.executable, "-m", "pytest", "exercises/", "-q", "-k", f"test_{exercise_id}"]
    kata_cmd += ["--kata-progress", str(progress)]
    env = _env(LORA_KATA_IMPL=str(impl))
    bases, owns, katas = [], [], []
    for _ in range(repeat):  # ABBA
        bases.append(timed(base_cmd))
        owns.append(timed(own_cmd))
        katas.append(timed(kata_cmd, env=env))
        katas.append(timed(kata_cmd, env=env))
        owns.append(timed(own_cmd))
        bases.append(timed(base_cmd))
    base = min(b["cpu_s"] for b in bases)
    own = min(o["cpu_s"] for o in owns)
    kata = min(k["cpu_s"] for k in katas)
    return {
        "exercise": exercise_id,
        "mistake": mutant.id,
        "failed": all(k["rc"] == 1 for k in katas),
        "base_floor_cpu_s": base,
        "own_floor_cpu_s": own,
        "kata_cpu_s": kata,
        "ratio_base_cpu": round(kata / base, 2),
        "ratio_own_cpu": round(kata / own, 2),
    }


def measure_full(scratch: Path) -> dict:
    run = timed(kata_command(scratch / "progress-full.json"))
    return {"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "ok": run["rc"] == 0}


def _copy_kata(destination: Path) -> None:
    for name in ("exercises", "lora_kata", "data", "lessons"):
        shutil.copytree(
            REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", destination)
    for source in (REPO / "solutions").glob("*.py"):
        shutil.copy(source, destination / "exercises" / source.name)


def _events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _wait_for(path: Path, kind: str, after: int, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(path)[after:]
        for event in events:
            if event["event"] == kind:
                return event
        time.sleep(0.02)
    return None


def measure_watch(ids: list[str], scratch: Path) -> list[dict]:
    tree = scratch / "kata"
    _copy_kata(tree)
    events = scratch / "watch-events.jsonl"
    env = _env(LORA_KATA_WATCH_EVENTS=str(events), PYTHONUNBUFFERED="1", LORA_KATA_LANG="en")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "lora_kata", "watch", "--no-clear"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        if _wait_for(events, "final", 0, 900) is None:  # the start-up check of every exercise
            return [{"exercise": "all", "error": "watch never finished its first check"}]
        for exercise_id in ids:
            module = by_id(exercise_id).modules[0]
            path = tree / "exercises" / f"{module}.py"
            seen = len(_events(events))
            saved = time.time()
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(f"\n# edited for the benchmark at {saved}\n")
            verdict = _wait_for(events, "verdict", seen, 600)
            _wait_for(events, "final", seen, 900)  # let the queue drain: runs independent
            if verdict is None:
                rows.append({"exercise": exercise_id, "error": "no verdict"})
                continue
            elapsed = verdict["t"] - saved
            rows.append(
                {
                    "exercise": exercise_id,
                    "saved": f"exercises/{module}.py",
                    "batch": verdict["batch"],
                    "save_to_verdict_s": round(elapsed, 3),
                    "tests_s": verdict["test_s"],
                    "beyond_tests_s": round(elapsed - verdict["test_s"], 3),
                }
            )
    finally:
        watcher.send_signal(2)
        try:
            watcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
    return rows


def print_table(result: dict) -> None:
    print(f"load average at start: {result['loadavg']}")
    print("\nsingle exercise: pytest exercises/ --solutions -k test_NN vs its import floor")
    header = f"{'NN':<4}{'floor cpu':>10}{'kata cpu':>10}{'ratio':>7}{'wall ratio':>11}  floor"
    print(header)
    print("─" * (len(header) + 30))
    for row in result["exercises"]:
        mark = "✔" if row["ratio_cpu"] <= GOAL_RATIO and row["ok"] else "✘"
        print(
            f"{row['exercise']:<4}{row['floor_cpu_s']:>9.2f}s{row['kata_cpu_s']:>9.2f}s"
            f"{row['ratio_cpu']:>7.2f}{row['ratio_wall']:>11.2f}  {mark} "
            f"{', '.join(row['floor_modules'])}"
        )
    if result.get("failing"):
        print(
            "\na failing exercise: pytest exercises/ -k test_NN with NN's first catalogued "
            "mistake, vs the base floor (import " + ", ".join(BASE_FLOOR) + ") and NN's own"
        )
        header = f"{'NN':<4}{'base':>8}{'own':>8}{'kata':>8}{'/base':>7}{'/own':>7}  mistake"
        print(header)
        print("─" * (len(header) + 30))
        for row in result["failing"]:
            mark = "✔" if row["ratio_base_cpu"] <= GOAL_RATIO and row["failed"] else "✘"
            print(
                f"{row['exercise']:<4}{row['base_floor_cpu_s']:>7.2f}s{row['own_floor_cpu_s']:>7.2f}s"
                f"{row['kata_cpu_s']:>7.2f}s{row['ratio_base_cpu']:>7.2f}{row['ratio_own_cpu']:>7.2f}"
                f"  {mark} {row['mistake']}"
            )
    if "tests_08_s" in result:
        print(f"\nexercise 08's tests: {result['tests_08_s']:.2f} s (goal ≤ {GOAL_08_S:g} s)")
    if "full" in result:
        full = result["full"]
        print(
            f"whole `pytest exercises/ --solutions`: {full['wall_s']:.1f} s wall, "
            f"{full['cpu_s']:.1f} s CPU (goal ≤ {GOAL_FULL_S:g} s)"
        )
    if result.get("watch"):
        print("\nlora-kata watch: save → verdict, beyond the batch's test time (goal ≤ 1.0 s)")
        for row in result["watch"]:
            if "error" in row:
                print(f"{row['exercise']:<4}{row['error']}")
                continue
            print(
                f"{row['exercise']:<4}saved {row['saved']:<22} ran {','.join(row['batch']):<14}"
                f" {row['save_to_verdict_s']:>6.2f} s − tests {row['tests_s']:>5.2f} s = "
                f"{row['beyond_tests_s']:>5.2f} s"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="ABBA rounds per exercise")
    parser.add_argument("--only", help="comma-separated exercise ids (default: all)")
    parser.add_argument("--no-watch", action="store_true")
    parser.add_argument("--no-full", action="store_true")
    parser.add_argument("--no-exercises", action="store_true", help="skip the -k test_NN pairs")
    parser.add_argument("--no-failing", action="store_true", help="skip the failing-exercise loop")
    args = parser.parse_args(argv)
    ids = args.only.split(",") if args.only else [e.id for e in load_catalog()]
    result: dict = {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="lora-kata-bench-") as folder:
        scratch = Path(folder)
        result["exercises"] = (
            [] if args.no_exercises else [measure_exercise(i, args.repeat, scratch) for i in ids]
        )
        result["failing"] = (
            [] if args.no_failing else [measure_failing(i, args.repeat, scratch) for i in ids]
        )
        for row in result["exercises"]:
            if row["exercise"] == "08":
                result["tests_08_s"] = row["tests_s"]
        if not args.no_full:
            result["full"] = measure_full(scratch)
        if not args.no_watch:
            result["watch"] = measure_watch([i for i in ids if i <= "05"], scratch)
    worst = max((r["ratio_cpu"] for r in result["exercises"]), default=0)
    beyond = [r["beyond_tests_s"] for r in result.get("watch", []) if "beyond_tests_s" in r]
    failing_worst = max((r["ratio_base_cpu"] for r in result["failing"]), default=0)
    result["goals"] = {
        "failing_ratio_base_cpu_max": failing_worst,
        "failing_ok": failing_worst <= GOAL_RATIO,
        "ratio_cpu_max": worst,
        "ratio_ok": worst <= GOAL_RATIO,
        "tests_08_ok": result.get("tests_08_s", 0) <= GOAL_08_S,
        "full_wall_ok": result.get("full", {}).get("wall_s", 0) <= GOAL_FULL_S,
        "watch_beyond_max_s": max(beyond, default=None),
        "watch_ok": bool(beyond) and max(beyond) <= GOAL_WATCH_S,
    }
    print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
