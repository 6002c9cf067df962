"""The real `renderers` library (PyPI 0.1.12) as mmbench's renderer: its Qwen3VLRenderer renders every
turn, and the trajectories keep what it returns. parts.py and world.py import the library; state.py
(what the trajectories hold) does not."""
