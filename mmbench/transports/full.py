"""FULL (today's behaviour): every turn ships every image; the returned sidecar keeps pixels."""

from mmbench.transports.base import Transport


class FullTransport(Transport):
    name = "full"
    summary = "ship every image every turn; trajectories keep pixel_values"
