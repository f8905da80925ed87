"""Open-file limit: a server that holds tens of thousands of sockets needs a descriptor each.

Debian's default soft limit (1,024, or what the service manager sets) refuses connections
long before memory runs out, with nothing in the log but ``accept`` errors. The server
raises its soft limit to the hard one at start, as nginx's ``worker_rlimit_nofile`` and Go's
runtime do, and says once when even the hard limit is below what the settings promise.
"""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger(__name__)

SPARE = 64  # descriptors beyond the connections: listening sockets, broker links, logs


def raise_open_files(max_connections: int, workers: int = 1) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force.

    ``max_connections`` is per process; every worker inherits the limit. A hard limit below
    ``max_connections + SPARE`` is logged as a warning naming the setting and the fix.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, max_connections + SPARE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may forbid even this
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
    needed = max_connections + SPARE
    if soft < needed:
        logger.warning(
            "open-file limit %d is below max_connections (%d per process%s) + %d: "
            "max_connections is lowered to fit, connections past it are refused with 503; "
            "raise the limit (systemd LimitNOFILE=, ulimit -n) or REALTIME_MAX_CONNECTIONS",
            soft,
            max_connections,
            f", {workers} workers" if workers > 1 else "",
            SPARE,
        )
    return soft
