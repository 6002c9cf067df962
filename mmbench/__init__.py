"""mmbench: how much memory multimodal RL rollouts retain, peak at and ship, per transport mode."""

__version__ = "0.1.0"
