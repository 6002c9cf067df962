"""RAW-FILE: raw media by reference. Each distinct image is written once to an asset directory the
client and the engine share, and travels as a `file://` URL: the wire carries the URLs, the disk
holds the images, the engine reads and preprocesses them (the library's asset-reference design)."""

from mmbench.transports.raw import RawTransport


class RawFileTransport(RawTransport):
    name = "raw-file"
    summary = "ship every image as a file:// URL to a shared asset directory; the engine reads it"
    media = "file"
