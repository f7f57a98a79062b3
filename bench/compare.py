"""Run a benchmark on this tree and on a baseline commit, alternating, and compare medians.

Not a test. Run from the repository root:

    .venv/bin/python bench/compare.py --baseline REV [--repeat 3] ingest -- --runs 3
    .venv/bin/python bench/compare.py --baseline REV [--repeat 3] economy -- --users 500

The baseline's ``src/`` is extracted with ``git archive`` into a temporary directory, and this
tree's ``src/`` is copied as it is at the start (so editing it during the runs changes
nothing); both trees run the *same* benchmark script (this tree's ``bench/<name>.py``) in the same
interpreter and environment, only ``PYTHONPATH`` differs (for ``ingest``, the served process
inherits it). Runs alternate, and the order flips every repeat, so drift of the machine's
load lands on both sides. Figures are medians over the repeats; ratios are this tree's
median over the baseline's.

* ``ingest``: events/s of ``single`` and ``batch100`` (each run's own median), and the ratio to
  the bare endpoint measured in that run (the least noisy figure on a shared machine);
* ``economy``: wall and CPU seconds of each scenario (ingest, sorting and delivery through the
  whole pipeline on simulated time, the sandbox in the same process: the cost of delivering)
  and its call counts (which must be equal: the journey never changes what is sent).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run(name: str, src: Path, args: list[str], workdir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]
    report = workdir / "report.json"
    if name == "ingest":
        command += ["--json", str(report)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({src}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    if name == "ingest":
        data = json.loads(report.read_text())
        return {
            f"{scenario}.{field}": data[scenario][field]
            for scenario in ("single", "batch100")
            for field in ("service_median", "ratio", "service_cpu_us_per_event")
        }
    figures: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        head, _, rest = line.partition(": ")
        if head in ("backlog", "streaming") and rest.startswith("{"):
            data = json.loads(rest)
            figures[f"{head}.seconds"] = data["seconds"]
            if "cpu_seconds" in data:
                figures[f"{head}.cpu_seconds"] = data["cpu_seconds"]
            figures[f"{head}.calls"] = data["record_calls"] + data["event_calls"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="a commit (git rev) to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("bench", choices=["ingest", "economy"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="after --: the bench's options")
    options = parser.parse_args()
    extra = [a for a in options.args if a != "--"]
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="fsd-compare-") as tmp:
        base = extract(options.baseline, Path(tmp) / "baseline")
        current = Path(tmp) / "current" / "src"
        shutil.copytree(ROOT / "src", current, ignore=shutil.ignore_patterns("__pycache__"))
        trees = {"baseline": base, "current": current}
        for index in range(options.repeat):
            order = ["baseline", "current"] if index % 2 == 0 else ["current", "baseline"]
            for tree in order:
                figures = run(options.bench, trees[tree], extra, Path(tmp))
                results[tree].append(figures)
                print(f"run {index + 1} {tree:8s} {json.dumps(figures)}", flush=True)
    print()
    print(f"{options.bench}: medians of {options.repeat} alternating runs "
          f"(baseline {options.baseline}); ratio = current / baseline")
    for key in results["current"][0]:
        base_median = statistics.median(r[key] for r in results["baseline"])
        current_median = statistics.median(r[key] for r in results["current"])
        ratio = current_median / base_median if base_median else float("nan")
        print(f"  {key:34s} baseline {base_median:>10}  current {current_median:>10}  "
              f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
