"""One ``multinode.py`` setup or one ``fanout.py`` target, with the hubs running an older
commit's code and this checkout's, round by round, to see what a change costs.

    python bench/compare.py 0798a28 [--setup "redis, 2 hubs"] [--rounds 3]
    python bench/compare.py 8f36dd8 --setup hub-ws-batch [--rounds 3]

The older commit is checked out in a temporary git worktree; the hub processes import it
instead of this checkout through ``PYTHONPATH`` (the load generator and the harness stay
this checkout's). The two alternate within every round, so both see the machine in the
same state. Prints each round and the medians, and writes
``bench/results/<date>-compare.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import fanout
import multinode
from common import write_report
from multinode import add_run_options, at, summarize

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the older commit")
    hub_targets = {t.key: t for t in fanout.targets() if t.key.startswith("hub-")}
    parser.add_argument(
        "--setup",
        default="redis, 2 hubs",
        choices=[*multinode.SETUPS, *hub_targets],
        help="a multinode.py setup, or a fanout.py hub target",
    )
    parser.add_argument("--max-rate", type=int, default=0, help="fanout.py's --max-rate")
    add_run_options(parser)
    args = parser.parse_args()

    def measure() -> dict[str, Any]:
        if args.setup in hub_targets:
            return fanout.measure(hub_targets[args.setup], args)
        return multinode.measure(args.setup, args)

    with tempfile.TemporaryDirectory() as directory:
        older = Path(directory) / "older"
        git = ["git", "-C", str(REPOSITORY), "worktree"]
        subprocess.run([*git, "add", "--detach", str(older), args.revision], check=True)
        try:
            sources = {args.revision: older / "src", "this checkout": REPOSITORY / "src"}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
            for number in range(args.rounds):
                for name, source in sources.items():
                    os.environ["PYTHONPATH"] = str(source)
                    result = measure()
                    results[name].append(result)
                    print(
                        f"round {number + 1}, {name}: capacity {result['capacity']}, p99 at "
                        f"1,000/s {at(result, 1000, 'p99')} ms, "
                        f"{at(result, 1000, 'serverUsPerDelivery')} us/delivery",
                        flush=True,
                    )
        finally:
            os.environ.pop("PYTHONPATH", None)
            subprocess.run([*git, "remove", "--force", str(older)], check=True)
    medians = {name: summarize(runs) for name, runs in results.items()}
    for name, row in medians.items():
        print(f"{name}: {row}")
    write_report("compare", {"setup": args.setup, "medians": medians, "rounds": results})


if __name__ == "__main__":
    main()
