"""Transport modes: the contract (base.py), one module per mode, and the registry."""

from mmbench.transports.registry import MODES, TRANSPORTS, make_transport

__all__ = ["MODES", "TRANSPORTS", "make_transport"]
