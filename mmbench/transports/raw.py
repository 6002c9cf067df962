"""RAW: the client runs no image processor and keeps no pixels. Each image travels as its source,
inline as a `data:image/<fmt>;base64,...` URL (as a chat message carries it), in the request's
`content_parts`; every request ships every image of the conversation so far (the released library
flattens every message's media each turn). The engine decodes, hashes and preprocesses the media
(its mm cache serves repeats) and returns the expanded prompt. (PyPI `renderers` 0.1.12,
`generate(..., process_multimodal=False)`.)"""

from mmbench.transports.base import Ship, Transport


class RawTransport(Transport):
    name = "raw"
    summary = "ship every source image inline as a data: URL every turn; the engine preprocesses"
    stores_pixels = False
    renders = False
    media = "data"

    def plan(self, endpoint: str, model: str, hashes: list[str]) -> list[Ship]:
        return [Ship.MEDIA] * len(hashes)
