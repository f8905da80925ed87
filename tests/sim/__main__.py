"""Run, replay and shrink simulation seeds.

python -m tests.sim --seeds 0:20000            # many seeds; prints the failing ones
python -m tests.sim --seed 123 --trace         # replay one seed, shrink it, print the trace
python -m tests.sim --seed 123 --trace --without strict,rollback
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tests.guarantee.checker import format_violations
from tests.sim.shrink import ddmin, signature
from tests.sim.world import generate, run_seed


def replay(seed: int, without: frozenset[str], shrink: bool = True) -> int:
    """Replay a seed; if it fails, shrink its operations and print the minimal trace."""
    config, ops = generate(seed, without)
    result = run_seed(seed, without=without)
    print(f"seed {seed}: {config}")
    if not result.failed:
        print(f"seed {seed} passes ({len(ops)} operations)")
        return 0
    target = signature(result.violations[0])
    print(f"seed {seed} fails: {len(result.violations)} violation(s), first: {target}")
    if shrink:

        def fails(subset: list) -> bool:  # type: ignore[type-arg]
            found = run_seed(seed, subset, without=without).violations
            return any(signature(v) == target for v in found)

        ops = ddmin(ops, fails)
    final = run_seed(seed, ops, trace=True, without=without)
    print(f"\nminimal operations ({len(ops)}):")
    for op in ops:
        print(f"  {op}")
    print("\ntrace:")
    for line in final.trace:
        print(f"  {line}")
    print()
    print(format_violations(final.violations, final.histories, context=4))
    shown = {(v.client, v.channel) for v in final.violations[:5] if v.channel}
    for client, channel in sorted(shown):
        print(f"\nwhat {client} saw on {channel}:")
        for i, rec in enumerate(final.histories[client]):
            if rec.get("channel") == channel or rec["kind"] in ("connect", "disconnect"):
                text = str(rec)
                print(f"  #{i} {text if len(text) < 240 else text[:237] + '...'}")
    return 1


def many(first: int, last: int, without: frozenset[str]) -> int:
    """Run seeds first..last-1; print each failing seed and a summary by violation kind."""
    kinds: Counter[tuple[int, str]] = Counter()
    failed = []
    start = time.perf_counter()
    for seed in range(first, last):
        result = run_seed(seed, without=without)
        if result.failed:
            failed.append(seed)
            kinds.update({signature(v) for v in result.violations})
            print(f"seed {seed}: {result.violations[0].detail}", flush=True)
    took = time.perf_counter() - start
    print(f"{len(failed)} of {last - first} seeds failed in {took:.1f}s")
    for (rule, detail), count in kinds.most_common():
        print(f"  {count:5d}  rule {rule}: {detail}")
    if failed:
        print(f"replay one: python -m tests.sim --seed {failed[0]} --trace")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this seed")
    parser.add_argument("--seeds", default="0:2000", help="run seeds FIRST:LAST")
    parser.add_argument("--trace", action="store_true", help="shrink and print the trace")
    parser.add_argument("--without", default="", help="operation kinds to leave out (a,b)")
    args = parser.parse_args(argv)
    without = frozenset(filter(None, args.without.split(",")))
    if args.seed is not None:
        return replay(args.seed, without, shrink=args.trace)
    first, _, last = args.seeds.partition(":")
    return many(int(first), int(last), without)


if __name__ == "__main__":
    sys.exit(main())
