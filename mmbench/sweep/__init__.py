"""Sweeps: scenario files (scenarios.py: versioned TOML grids, validated before anything runs) and
the loop that runs their points through the harness and keeps every result at once (loop.py)."""
