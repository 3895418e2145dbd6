"""Two commits side by side in one run: `python -m bench.compare BASE [HEAD] [--rounds N] [-- bench options]`.

Each commit is exported with `git archive` (no git state changes) and measured by its own `python -m bench`,
alternating BASE, HEAD, BASE, HEAD, ... so the machine's phase hits both alike. The exports share this
checkout's cached stores (bench/.data). The table gives each row's median result for both and how many
times better HEAD is (> 1 = better, by the unit's direction: rates up, times and sizes down).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORTS = Path("/tmp/bench-compare")
_NUMBER = re.compile(r"^\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*(\S*)")
_LOWER_IS_BETTER = ("ms", "s", "us", "MB", "GB", "KB")


def export(ref: str) -> tuple[str, Path]:
    """The commit's tree under /tmp/bench-compare/<sha>, its cached stores linked to this checkout's."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = EXPORTS / sha
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src", "bench", "tests"], cwd=REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    data = tree / "bench" / ".data"
    if not data.exists():
        (REPO / "bench" / ".data").mkdir(exist_ok=True)
        data.symlink_to(REPO / "bench" / ".data")
    return sha, tree


def run_bench(tree: Path, options: list[str]) -> dict[str, str]:
    """One `python -m bench` of this tree: each row's result cell by its name."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    output = subprocess.run(
        [sys.executable, "-m", "bench", *options], cwd=tree, env=env, capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and line.startswith("|") and cells[0] not in ("benchmark", "") and "---" not in cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def value_of(cell: str) -> tuple[float, str] | None:
    match = _NUMBER.match(cell)
    return (float(match.group(1).replace(",", "")), match.group(2)) if match else None


def compare_table(names: tuple[str, str], runs: dict[str, list[dict[str, str]]]) -> str:
    base, head = names
    lines = [
        f"| benchmark | {base} (median) | {head} (median) | {head} vs {base} | runs |",
        "|---|---|---|---|---|",
    ]
    for row in runs[base][0]:
        medians = {}
        for name in names:
            values = [parsed for run in runs[name] if (parsed := value_of(run.get(row, "")))]
            medians[name] = (statistics.median(v for v, _ in values), values[0][1]) if values else None
        old, new = medians[base], medians[head]
        if old is None or new is None or not old[0] or not new[0]:
            continue
        better = old[0] / new[0] if old[1] in _LOWER_IS_BETTER else new[0] / old[0]
        lines.append(f"| {row} | {old[0]:,.2f} {old[1]} | {new[0]:,.2f} {new[1]} | {better:.2f}x | {len(runs[head])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("base", help="the commit to compare against (e.g. main~3)")
    parser.add_argument("head", nargs="?", default="HEAD", help="the commit measured (default HEAD)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each commit, alternating (default 2)")
    ours, options = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)  # what follows -- is python -m bench's
    trees = dict(export(ref) for ref in (args.base, args.head))
    names = (next(iter(trees)), list(trees)[-1])
    runs: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names:
            print(f"round {round_number + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            runs[name].append(run_bench(trees[name], options))
    print(compare_table(names, runs))


if __name__ == "__main__":
    main(sys.argv[1:])
