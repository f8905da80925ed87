"""The long chaos run: ``python -m tests.chaos --minutes 10 --clients 300 [--seed N]``.

Prints the fault counts, the numbers and every violation with the seed; writes the whole
record (log, histories, rights, faults) to ``--dump`` for a later look, which
``python -m tests.chaos --check FILE`` checks again. Exit status 1 when the checker found a
violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import ChaosConfig, ChaosResult, run_chaos
from tests.conftest import AMQP_URL
from tests.reliability.conftest import raise_nofile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="faults for this long")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument(
        "--transports",
        default="redis,amqp",
        help="comma-separated clusters: redis,amqp (default), redis or amqp",
    )
    parser.add_argument("--rate", type=float, default=25.0, help="events/s per cluster")
    parser.add_argument("--amqp-url", default=AMQP_URL)
    parser.add_argument("--dump", type=Path, default=None, help="write the record here (JSON)")
    parser.add_argument("--check", type=Path, default=None, help="check a dumped record")
    args = parser.parse_args(argv)
    if args.check:
        return _check_dump(args.check)
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        config = ChaosConfig(
            seed=seed,
            duration=args.minutes * 60,
            clients=args.clients,
            transports=tuple(t for t in args.transports.split(",") if t),
            publish_rate=args.rate,
            settle=30.0,
            workdir=Path(tmp),
            amqp_url=args.amqp_url,
        )
        print(f"chaos: seed={seed} {args.minutes} min, {args.clients} clients", flush=True)
        result = asyncio.run(run_chaos(config))
        print("\n".join(result.fault_log[-30:]))
        print(result.report(limit=40))
        if args.dump:
            result.dump(args.dump)
            print(f"record written to {args.dump}")
        if result.violations:
            for node_log in sorted(Path(tmp).glob("*.log")):
                text = node_log.read_text(errors="replace")
                if "Traceback" in text or "ERROR" in text:
                    print(
                        f"--- {node_log.name} (last 40 lines)\n"
                        + "\n".join(text.splitlines()[-40:])
                    )
    return 1 if result.violations else 0


def _check_dump(path: Path) -> int:
    """Run the checker again over a record written by ``--dump``."""
    from collections import Counter

    from tests.guarantee.checker import check

    data = json.loads(path.read_text())
    violations = check(data["published"], data["histories"], data["rights"], settled=True)
    result = ChaosResult(
        data["seed"],
        data["published"],
        data["histories"],
        data["rights"],
        Counter(data["faults"]),
        data["fault_log"],
        violations,
        data["numbers"],
    )
    print(result.report(limit=40))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
