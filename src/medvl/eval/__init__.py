"""The evaluation harness (`medvl eval`, `medvl audit`, `medvl bench-build`)."""
