"""The live chaos run of the delivery guarantee (issue 13).

Two real server nodes per cluster, hundreds of protocol-following clients, publishers on the
HTTP API and seeded random faults; the histories go through ``tests.guarantee.checker``.
Short variant: ``tests/chaos/test_chaos.py``; long one: ``python -m tests.chaos --help``.
"""
