"""Media URLs: how a raw-media item references its source image, both sides of it.

The client makes them: `data_url` (the image inline, as a chat message carries it) or an
`AssetStore` (each distinct image written once to a directory the engine can read, referenced as a
`file://` URL). The engine resolves them with `load_media`, which refuses anything it should not
read: a data URL that is not base64 or not of an image media type, a `file://` path outside the
allowed directory (checked after symlinks are resolved, before anything is opened), a missing
file, or another scheme. Every refusal is a MediaError with the HTTP status the engine answers.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pybase64

# The media types a source is encoded in (world.images formats), and the ones the engine accepts.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
ACCEPTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")
DATA_PREFIX = "data:"


class MediaError(ValueError):
    """A media URL the engine refuses; `status` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def data_url_prefix(fmt: str) -> str:
    return f"data:{MEDIA_TYPES[fmt]};base64,"


def data_url(source: bytes, fmt: str) -> str:
    """The encoded image inline: `data:image/<fmt>;base64,<base64 of the file bytes>`."""
    return data_url_prefix(fmt) + pybase64.b64encode(source).decode("ascii")


class AssetStore:
    """A directory the client and the engine share: each distinct image is written once, named by
    its content, and referenced by its `file://` URL."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._written: set[str] = set()
        self.bytes_written = 0
        # rollouts put from several threads at once; a GRPO group's rollouts put the same image
        self._lock = threading.Lock()

    def put(self, source: bytes, fmt: str) -> str:
        name = f"{hashlib.blake2b(source, digest_size=16).hexdigest()}.{fmt}"
        path = self.dir / name
        with self._lock:
            if name not in self._written:
                tmp = self.dir / f".{name}.{os.getpid()}.tmp"
                tmp.write_bytes(source)
                os.replace(tmp, path)
                self._written.add(name)
                self.bytes_written += len(source)
        return path.as_uri()


def disk_bytes(directory: Path) -> int:
    """Bytes the files directly in `directory` occupy (their sizes)."""
    try:
        return sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())
    except OSError:
        return 0


def _decode_data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError(400, "data URL has no ',' between its header and its data")
    media_type, _, params = header[len(DATA_PREFIX) :].partition(";")
    media_type = media_type.strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        accepted = ", ".join(ACCEPTED_MEDIA_TYPES)
        raise MediaError(415, f"unsupported media type {media_type or '(none)'!r}; use one of {accepted}")
    if "base64" not in [p.strip().lower() for p in params.split(";")]:
        raise MediaError(400, "data URL must be base64 (data:<type>;base64,...)")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise MediaError(413, f"data URL is larger than the engine's limit of {max_bytes} bytes")
    try:
        return pybase64.b64decode(payload, validate=True)
    except ValueError:
        raise MediaError(400, "data URL payload is not valid base64") from None


def _read_file_url(url: str, allowed_dir: Path | None, max_bytes: int) -> bytes:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise MediaError(403, f"file URL names a host ({parts.netloc!r}); only local files are read")
    if allowed_dir is None:
        raise MediaError(403, "file:// URLs are refused: the engine has no allowed local media directory")
    # Resolved (symlinks and '..' followed) before anything is opened; only then compared.
    path = Path(unquote(parts.path)).resolve()
    if not path.is_relative_to(allowed_dir):
        raise MediaError(403, f"file path {path} is outside the allowed local media directory")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MediaError(413, f"media file is larger than the engine's limit of {max_bytes} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise MediaError(404, f"media file {path.name} does not exist") from None
    except IsADirectoryError:
        raise MediaError(400, f"media path {path.name} is a directory") from None
    except OSError as exc:
        raise MediaError(400, f"media file {path.name} cannot be read ({exc.strerror})") from None


def load_media(url: str, allowed_dir: Path | None, max_bytes: int) -> bytes:
    """The encoded image bytes a media URL names (data: or file://); MediaError otherwise."""
    if url.startswith(DATA_PREFIX):
        return _decode_data_url(url, max_bytes)
    if url.startswith("file:"):
        return _read_file_url(url, allowed_dir, max_bytes)
    scheme = url.split(":", 1)[0] if ":" in url else ""
    raise MediaError(400, f"unsupported media URL scheme {scheme[:20]!r}; use data: or file://")
