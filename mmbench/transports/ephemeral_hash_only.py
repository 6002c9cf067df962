"""EPHEMERAL + HASH-ONLY: both modes at once, each as its own module defines it: hash-only's
shipping (plan, the sent-hash LRU, forgetting on an error) and ephemeral's descriptor-only steps
(`stored`, found first in the method order)."""

from mmbench.transports.ephemeral import EphemeralTransport
from mmbench.transports.hash_only import HashOnlyTransport


class EphemeralHashOnlyTransport(EphemeralTransport, HashOnlyTransport):
    name = "ephemeral+hash-only"
    summary = "hash-only shipping and descriptor-only trajectories"
