"""What reads results and computes from them, never running a point: fits over repeats (fits.py),
extrapolation past what preflight lets run, the memory ledger, compare (the CI gate), fidelity
(sim against the library), the report every reporter renders, and plan (the model's predictions
for a machine, before anything runs)."""
