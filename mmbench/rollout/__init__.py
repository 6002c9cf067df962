"""The rollout driver (K rollouts x N turns), above the world's parts and the transports it composes."""

from mmbench.rollout.driver import RolloutDriver
from mmbench.rollout.state import Conversation, RolloutFailed, Step, Totals, Trajectory

__all__ = ["Conversation", "RolloutDriver", "RolloutFailed", "Step", "Totals", "Trajectory"]
