"""HASH-ONLY: send each image once, then only its hash (a null slot the engine serves from its
cache). The client remembers sent hashes per (endpoint, model) in a bounded LRU; on an engine
error it forgets the request's hashes and the driver resends everything in full once. Images
sent hash-only are stripped from the returned sidecar."""

from mmbench.transports.base import Ship, Transport
from mmbench.world.sidecar import MultiModalData


class HashOnlyTransport(Transport):
    name = "hash-only"
    summary = "ship each image once, then its hash; needs an engine with an mm cache"
    needs_engine_cache = True

    def plan(self, endpoint: str, model: str, hashes: list[str]) -> list[Ship]:
        sent = self.sent(endpoint, model)
        return [Ship.NULL if h in sent else Ship.PIXELS for h in hashes]

    def on_success(self, endpoint: str, model: str, hashes: list[str]) -> None:
        sent = self.sent(endpoint, model)
        for h in hashes:
            sent.touch(h)

    def on_error(self, endpoint: str, model: str, hashes: list[str]) -> None:
        sent = self.sent(endpoint, model)
        for h in hashes:
            sent.forget(h)

    def stored(self, sidecar: MultiModalData, plan: list[Ship]) -> MultiModalData:
        return sidecar.with_items(
            [
                item if s is Ship.PIXELS else item.descriptor()
                for item, s in zip(sidecar.items, plan, strict=True)
            ]
        )
