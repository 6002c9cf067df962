"""What each transport mode does, as far as the model is concerned: stated once, here.

Every other part of the model (the driver simulation, retained bytes, the wire, the peak) reads
these flags and never a mode's name, so that a new mode is modelled by adding one line below (and
`mmbench plan` shows it as soon as it is here). A test checks the flags against the transports'
own capability flags (`stores_pixels`, `needs_engine_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbench.errors import MmbenchError


@dataclass(frozen=True, slots=True)
class ModeBehaviour:
    #: the client runs the image processor (renderer pool and its FIFO caches); the raw-media modes,
    #: whose engine preprocesses, do not
    client_renders: bool
    #: a step keeps the pixel_values of the items it shipped in full (full: all of them; hash-only:
    #: the new ones); where it keeps none (ephemeral) every full item is re-derived when shipped
    stores_pixels: bool
    #: an image already sent goes as a null slot that the engine serves from its cache; on an engine
    #: error the client forgets the request's hashes and resends every item in full once
    null_slots: bool
    #: raw media (client_renders False): each image travels as a data: URL ("data") or a file://
    #: reference ("file"), and the engine preprocesses it (model/raw.py)
    media: str | None = None


MODEL_MODES: dict[str, ModeBehaviour] = {
    "full": ModeBehaviour(client_renders=True, stores_pixels=True, null_slots=False),
    "ephemeral": ModeBehaviour(client_renders=True, stores_pixels=False, null_slots=False),
    "hash-only": ModeBehaviour(client_renders=True, stores_pixels=True, null_slots=True),
    "ephemeral+hash-only": ModeBehaviour(client_renders=True, stores_pixels=False, null_slots=True),
    "raw": ModeBehaviour(client_renders=False, stores_pixels=False, null_slots=False, media="data"),
    "raw-file": ModeBehaviour(client_renders=False, stores_pixels=False, null_slots=False, media="file"),
}


def behaviour(mode: str) -> ModeBehaviour:
    try:
        return MODEL_MODES[mode]
    except KeyError:
        raise MmbenchError(
            f"the model does not cover mode {mode!r}; it covers: {', '.join(MODEL_MODES)}"
        ) from None
