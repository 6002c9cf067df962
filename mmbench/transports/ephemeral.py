"""EPHEMERAL: the returned sidecar is descriptor-only; pixels are re-derived from the source
image (still in the message) when the next request needs them. Shipping is unchanged."""

from mmbench.transports.base import Ship, Transport
from mmbench.world.sidecar import MultiModalData


class EphemeralTransport(Transport):
    name = "ephemeral"
    summary = "trajectories keep descriptors only; pixels re-derived from sources when shipped"
    stores_pixels = False

    def stored(self, sidecar: MultiModalData, plan: list[Ship]) -> MultiModalData:
        return sidecar.descriptors_only()
