"""The supervisor loads the broker's module before forking, so workers share its pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import sys
from realtime.brokers import preload_broker
from realtime.config import Settings
preload_broker(Settings(broker_url=sys.argv[1]))
print(sorted(m for m in sys.modules if m.startswith("realtime.brokers.")))
"""


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("redis://127.0.0.1:6379/0", "realtime.brokers.redis"),
        ("redis+cluster://127.0.0.1:7000", "realtime.brokers.redis_cluster"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "realtime.brokers.rabbitmq"),
        ("memory://", "realtime.brokers.memory"),
    ],
)
def test_preload_imports_the_broker_module(url: str, module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url], capture_output=True, text=True, check=True
    ).stdout
    assert f"'{module}'" in out
    if module == "realtime.brokers.memory":  # nothing else loaded for nothing
        assert "'realtime.brokers.redis'" not in out and "rabbitmq" not in out, out
