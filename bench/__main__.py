"""``python -m bench [--quick] [--only 1,3]``: run the benchmarks, print the table of ratios."""

from __future__ import annotations

import argparse
import os
import sys

from .suite import ALL, FULL, QUICK, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the code runs, figures mean little")
    parser.add_argument("--only", default=",".join(ALL), help="benchmarks to run, e.g. 1,3 (default: all)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL")
        or os.environ.get("EVENTLIB_TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/0",
        help="the Redis used as broker and store (default: $BENCH_REDIS_URL, else 127.0.0.1:6379/0)",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    args = parser.parse_args(argv)
    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    unknown = sorted(set(only) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmarks {', '.join(unknown)}; choose among {', '.join(ALL)}")
    sizes = QUICK if args.quick else FULL
    report, errors = run_all(args.redis_url, sizes, only, install=not (args.quick or args.no_install))
    print(report.render())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
