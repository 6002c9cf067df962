"""After the rollout (issue 31): what each mode costs the orchestrator and the trainer.

The worker hands its trajectories over as traces (traces.py); an orchestrator process builds,
packs, encodes and ships one batch per DP rank (packing.py, orchestrator.py); one trainer process
per rank and policy materializes the pixels, runs a CPU forward stand-in and reports each pixel
tensor's checksum (rank.py); the harness runs them and checks those checksums against the
engine's (stage.py); the model predicts and extrapolates (model.py). See docs/trainer.md.
"""
