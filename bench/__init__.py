"""Fan-out benchmark: a load generator, peer servers and a runner (see docs/PERFORMANCE.md)."""
