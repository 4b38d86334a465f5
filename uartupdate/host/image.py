"""Images on the host: a local file, streamed; never read whole into memory."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError


@dataclass
class Image:
    """An image file on disk with its size and SHA-256, read by offset."""

    path: Path
    size: int
    sha256: bytes
    version: str | None = None
    sig: dict[str, Any] | None = None

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise ImageError(f"{self.path} changed while it was being sent")
        return data

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


def open_image(ref: str | Path) -> Image:
    return Image.from_file(ref)
