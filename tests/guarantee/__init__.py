"""The delivery-guarantee checker, shared by the simulation (tests/sim) and the chaos run."""
