"""Fewer bytes on the wire: blocks the device already holds are kept, the rest is deflated.

The device tells what it can afford (Sys.GetInfo) and the digest of every block of
the image it runs (SWUpdate.BlockDigests). The host keeps the blocks that match
(the device copies them itself), and deflates the rest when that shrinks it. The
stream is written to a temporary file block by block, so memory stays flat.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Protocol

from .image import Image

#: Deflate only pays when it saves at least this share of the bytes.
MIN_SAVING = 0.03
SAMPLE = 256 * 1024  # bytes compressed to decide whether compression pays
DIGEST_BYTES = 8


class Source(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass
class StreamPlan:
    image: Image
    block: int
    keep: bytearray  # bit i: block i is copied by the device from its running image
    deflate_bits: int  # 0: bytes go as they are

    @property
    def kept_blocks(self) -> int:
        return sum(bin(b).count("1") for b in self.keep)

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.deflate_bits:
            out["encoding"] = "deflate"
        if self.kept_blocks:
            out["keep"] = base64.b64encode(bytes(self.keep)).decode()
        return out

    def leading_kept_bytes(self) -> int:
        """Bytes at the start of the image the device copies itself (not a resumed transfer)."""
        index = 0
        while index * self.block < self.image.size and self.kept(index):
            index += 1
        return min(index * self.block, self.image.size)

    def kept(self, index: int) -> bool:
        return bool(self.keep and self.keep[index // 8] >> (index % 8) & 1)

    def sent_pieces(self, start: int) -> Any:
        """The image bytes the stream carries from image offset `start` (sector aligned), in order."""
        for offset in range(start - start % self.block, self.image.size, self.block):
            if not self.kept(offset // self.block):
                lo = max(offset, start)
                yield self.image.read(lo, min(offset + self.block, self.image.size) - lo)

    def stream_from(self, start: int) -> Source:
        """The stream a session starting at image offset `start` (READY) sends, as wire offsets."""
        if not self.deflate_bits and not self.kept_blocks:
            return self.image
        return StreamFile(self, start)


class StreamFile:
    """The encoded stream from `start`, spooled to a temporary file; DATA offsets start at `start`."""

    def __init__(self, plan: StreamPlan, start: int) -> None:
        self.start = start
        self._file: BinaryIO = tempfile.TemporaryFile()
        deflate = zlib.compressobj(9, zlib.DEFLATED, -plan.deflate_bits) if plan.deflate_bits else None
        for piece in plan.sent_pieces(start):
            self._file.write(deflate.compress(piece) if deflate else piece)
        if deflate:
            self._file.write(deflate.flush())
        self.size = start + self._file.tell()

    def read(self, offset: int, length: int) -> bytes:
        self._file.seek(offset - self.start)
        return self._file.read(length)


def compression_pays(pieces: Any, bits: int) -> bool:
    """Deflate a sample of what would be sent: does it save at least MIN_SAVING?"""
    deflate = zlib.compressobj(1, zlib.DEFLATED, -bits)  # the fastest level tells, and costs little
    raw = packed = 0
    for piece in pieces:
        raw += len(piece)
        packed += len(deflate.compress(piece))
        if raw >= SAMPLE:
            break
    packed += len(deflate.flush())
    return raw > 0 and packed < raw * (1 - MIN_SAVING)


def plan_stream(
    image: Image,
    info: dict[str, Any] | None,
    block_digests: Callable[[], list[bytes]] | None,
    compress: bool = True,
) -> StreamPlan | None:
    """How to send `image`; None when the device offers nothing beyond plain bytes."""
    if not info or not isinstance(info.get("block"), int) or info["block"] <= 0:
        return None
    block = info["block"]
    blocks = -(-image.size // block)
    plan = StreamPlan(image, block, bytearray(-(-blocks // 8)), 0)
    if block_digests is not None:
        held = block_digests()
        for index in range(min(image.size // block, len(held))):  # whole blocks only
            if hashlib.sha256(image.read(index * block, block)).digest()[:DIGEST_BYTES] == held[index]:
                plan.keep[index // 8] |= 1 << (index % 8)
    bits = info.get("deflate_window_bits") or 0
    if compress and "deflate" in info.get("encodings", []) and bits and compression_pays(plan.sent_pieces(0), bits):
        plan.deflate_bits = bits
    return plan if plan.deflate_bits or plan.kept_blocks else None
