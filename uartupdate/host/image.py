"""Images on the host: a local file, a URL, or a metadata document naming either.

Whatever the source, the image ends up as a file on disk that is read by offset
while it is sent, so memory stays flat for any size. A URL is downloaded whole
(to a temporary file) and checked before the device is asked to erase anything.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ImageError

#: A file this small that parses as a JSON object is a metadata document, not an image.
MAX_METADATA = 64 * 1024
METADATA_KEYS = {"url", "size", "version", "sig", "section"}
BLOCK = 1 << 16


@dataclass
class Image:
    """An image file on disk with its size and SHA-256, read by offset."""

    path: Path
    size: int
    sha256: bytes
    version: str | None = None
    sig: dict[str, Any] | None = None
    section: str | None = None
    #: Address of the image's first byte in the device's memory map, when the file says (Intel HEX).
    base: int | None = None
    #: One sentence about how the file was turned into this image (Intel HEX), for the user.
    note: str | None = None
    _file: BinaryIO | None = field(default=None, repr=False)

    def read(self, offset: int, length: int) -> bytes:
        if self._file is None:
            self._file = open(self.path, "rb")
        data = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise ImageError(f"{self.path} changed while it was being sent")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @classmethod
    def from_file(cls, path: str | Path) -> Image:
        path = Path(path)
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    size += len(block)
        except FileNotFoundError:
            raise ImageError(f"image {path} does not exist") from None
        except IsADirectoryError:
            raise ImageError(f"image {path} is a directory") from None
        except PermissionError:
            raise ImageError(f"image {path} cannot be read: permission denied") from None
        return cls(path, size, h.digest())


_downloads: list[str] = []


@atexit.register
def _remove_downloads() -> None:
    for folder in _downloads:
        shutil.rmtree(folder, ignore_errors=True)


def _is_url(ref: str) -> bool:
    return urllib.parse.urlsplit(ref).scheme in ("file", "http", "https")


def _local_path(ref: str) -> Path:
    if ref.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(ref).path))
    return Path(ref)


def _download(url: str, timeout: float) -> Path:
    """Fetch `url` into a temporary file; refuse HTTP errors and truncated bodies."""
    folder = tempfile.mkdtemp(prefix="uartupdate-")
    _downloads.append(folder)
    name = Path(urllib.parse.urlsplit(url).path).name or "image.bin"
    target = Path(folder, name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as out:
            expected = resp.headers.get("Content-Length")
            got = 0
            while block := resp.read(BLOCK):
                out.write(block)
                got += len(block)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ImageError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot fetch {url}: {exc}") from None
    if expected is not None and expected.isdigit() and got != int(expected):
        raise ImageError(f"download of {url} was truncated: {got} of {expected} bytes")
    return target


def _fetch(ref: str, timeout: float) -> Path:
    if ref.startswith(("http://", "https://")):
        return _download(ref, timeout)
    path = _local_path(ref)
    try:
        exists = path.exists()
    except (ValueError, OSError):  # a NUL byte, a name too long: no file has it
        exists = False
    if not exists:
        raise ImageError(f"image {path} does not exist")
    return path


def _read_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata document at `path`, or None when the file is an image."""
    try:
        if path.stat().st_size > MAX_METADATA:
            return None
        with open(path, "rb") as f:
            head = f.read(MAX_METADATA)
    except OSError:
        return None
    if not head.lstrip().startswith(b"{"):
        return None
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return None
    return doc if isinstance(doc, dict) and "url" in doc else None


def _check_metadata(doc: dict[str, Any], where: str) -> None:
    unknown = set(doc) - METADATA_KEYS
    if unknown:
        raise ImageError(f"metadata {where} has unknown keys: {', '.join(sorted(unknown))}")
    if not isinstance(doc["url"], str):
        raise ImageError(f"metadata {where}: url must be a string")
    if "size" in doc and (not isinstance(doc["size"], int) or isinstance(doc["size"], bool) or doc["size"] < 0):
        raise ImageError(f"metadata {where}: size must be a non-negative integer")
    for key in ("version", "section"):
        if key in doc and not isinstance(doc[key], str):
            raise ImageError(f"metadata {where}: {key} must be a string")
    sig = doc.get("sig")
    if sig is not None and not (
        isinstance(sig, dict) and isinstance(sig.get("alg"), str) and isinstance(sig.get("v"), str)
    ):
        raise ImageError(f"metadata {where}: sig must be an object with string alg and v")


def _from_file_or_hex(path: Path, base: int | None, section_size: int | None) -> Image:
    """A raw image, or the raw image an Intel HEX file describes (told apart by content, not name)."""
    from .hexfile import looks_like_hex, read_hex, to_binary

    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return Image.from_file(path)  # says why in one sentence
    if not looks_like_hex(head):
        if path.suffix.lower() in (".hex", ".ihex", ".ihx") and head.lstrip()[:1] == b":":
            read_hex(path)  # a damaged hex file: say which line is wrong
        if base is not None:
            raise ImageError(f"{path} is a raw image: a base address applies to Intel HEX files only")
        image = Image.from_file(path)
        if path.suffix.lower() in (".hex", ".ihex", ".ihx"):
            image.note = f"{path.name} is named like Intel HEX but holds raw bytes: sent as they are"
        return image
    binary = to_binary(read_hex(path), base, section_size)
    image = Image.from_file(binary.path)
    image.base = binary.base
    image.note = f"{path.name}: Intel HEX, {binary.size} bytes from 0x{binary.base:x}"
    if binary.skipped:
        image.note += "; left out, beyond the section: " + ", ".join(map(str, binary.skipped))
    return image


def open_image(
    ref: str | Path, timeout: float = 30.0, *, base: int | None = None, section_size: int | None = None
) -> Image:
    """An image from a path, a file:// / http(s):// URL, or a metadata document (protocol/SPEC.md).

    An Intel HEX file (recognised by its content) becomes the raw bytes of the section that
    starts at `base` (default: the hex's lowest address), 0xFF in gaps (hexfile.to_binary).
    """
    ref = str(ref)
    path = _fetch(ref, timeout)
    doc = _read_metadata(path)
    if doc is None:
        return _from_file_or_hex(path, base, section_size)
    if base is not None:
        raise ImageError(f"{ref} is a metadata document: a base address applies to Intel HEX files only")
    _check_metadata(doc, ref)
    base = ref if _is_url(ref) else Path(ref).resolve().as_uri()
    image_ref = urllib.parse.urljoin(base, doc["url"])
    image = Image.from_file(_fetch(image_ref, timeout))
    if "size" in doc and doc["size"] != image.size:
        raise ImageError(f"{image_ref} holds {image.size} bytes, its metadata says {doc['size']}")
    sig = doc.get("sig")
    if sig is not None and sig["alg"] == "sha256" and sig["v"].lower() != image.sha256.hex():
        raise ImageError(f"SHA-256 of {image_ref} does not match the sig of its metadata")
    image.version, image.sig, image.section = doc.get("version"), sig, doc.get("section")
    return image
