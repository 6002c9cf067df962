"""EPHEMERAL + HASH-ONLY: hash-only shipping, and descriptor-only trajectories."""

from mmbench.transports.base import Ship
from mmbench.transports.hash_only import HashOnlyTransport
from mmbench.world.sidecar import MultiModalData


class EphemeralHashOnlyTransport(HashOnlyTransport):
    name = "ephemeral+hash-only"
    summary = "hash-only shipping and descriptor-only trajectories"
    stores_pixels = False

    def stored(self, sidecar: MultiModalData, plan: list[Ship]) -> MultiModalData:
        return sidecar.descriptors_only()
