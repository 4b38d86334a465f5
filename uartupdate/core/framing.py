"""Frames on the serial line: COBS-encoded, 0x00-delimited, CRC-32 protected.

Wire form of one frame (protocol/SPEC.md, section "Framing"):

    COBS( kind:u8 | kind-specific header | payload | crc32:u32le ) 0x00

The decoder is sans-I/O: feed it whatever bytes arrived, get back frames and
framing errors. It never holds more than one maximum-size frame of input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

import crcmod.predefined
from construct import Bytes, Int8ul, Int16ul, Int32ul, Struct

crc32 = crcmod.predefined.mkCrcFun("crc-32")

DELIMITER = b"\x00"
#: Largest decoded frame (kind .. crc) a receiver must accept unless it advertises less.
DEFAULT_MAX_FRAME = 65536


class Kind(enum.IntEnum):
    JSON = 0x01  # payload: a UTF-8 JSON envelope
    DATA = 0x02  # host -> device: image bytes at an offset of a transfer
    ACK = 0x03  # device -> host: everything below `offset` is safely received
    READY = 0x04  # device -> host: a transfer is open, send from `offset`
    ABORT = 0x05  # host -> device: give up a transfer (staged bytes are kept)


# Compiled: construct generates plain Python for each struct, several times faster per frame.
DataHeader = Struct("xfer" / Int16ul, "offset" / Int32ul).compile()
AckBody = Struct("xfer" / Int16ul, "offset" / Int32ul, "flags" / Int8ul).compile()
ReadyBody = Struct(
    "xfer" / Int16ul,
    "offset" / Int32ul,
    "chunk" / Int16ul,
    "window" / Int32ul,
    "prefix_sha256" / Bytes(32),
).compile()
AbortBody = Struct("xfer" / Int16ul).compile()
DATA_HEADER_SIZE = DataHeader.sizeof()
ACK_SIZE, READY_SIZE, ABORT_SIZE = AckBody.sizeof(), ReadyBody.sizeof(), AbortBody.sizeof()

ACK_NAK = 0x01  # ACK flag: a gap was seen, resend from `offset`


@dataclass(frozen=True)
class JsonFrame:
    payload: bytes


@dataclass(frozen=True)
class DataFrame:
    xfer: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class AckFrame:
    xfer: int
    offset: int
    nak: bool = False


@dataclass(frozen=True)
class ReadyFrame:
    xfer: int
    offset: int
    chunk: int
    window: int
    prefix_sha256: bytes


@dataclass(frozen=True)
class AbortFrame:
    xfer: int


Frame = Union[JsonFrame, DataFrame, AckFrame, ReadyFrame, AbortFrame]


class FrameErrorReason(str, enum.Enum):
    TOO_LARGE = "too_large"  # no delimiter within the maximum frame size
    COBS = "cobs"  # the bytes between delimiters are not valid COBS
    CRC = "crc"  # CRC-32 mismatch (line noise)
    SHORT = "short"  # fewer bytes than a kind byte and a CRC
    KIND = "kind"  # unknown frame kind
    HEADER = "header"  # the kind's header is truncated


@dataclass(frozen=True)
class FrameError:
    """A run of bytes between delimiters that is not a frame. Never raised: returned."""

    reason: FrameErrorReason
    detail: str


# ---------------------------------------------------------------- COBS


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: no 0x00 in the output, +1 byte per 254."""
    out: list[bytes] = []
    blocks = data.split(b"\x00")
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        length = len(block)
        pos = 0
        while length - pos >= 254:
            out += (_CODES[0xFF], block[pos : pos + 254])
            pos += 254
        rest = length - pos
        if rest or not length or index < last:  # a final full run needs no closing code
            out += (_CODES[rest + 1], block[pos:] if pos else block)
    return b"".join(out)


_CODES = [bytes([code]) for code in range(256)]


def cobs_decode(encoded: bytes) -> bytes:
    """Inverse of cobs_encode; raises ValueError on malformed input."""
    out = bytearray()
    i, n = 0, len(encoded)
    while i < n:
        code = encoded[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        out += encoded[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def cobs_max_encoded(length: int) -> int:
    return length + length // 254 + 1


# ---------------------------------------------------------------- frames


def _body(frame: Frame) -> bytes:
    if isinstance(frame, DataFrame):
        return bytes([Kind.DATA]) + DataHeader.build(dict(xfer=frame.xfer, offset=frame.offset)) + frame.data
    if isinstance(frame, JsonFrame):
        return bytes([Kind.JSON]) + frame.payload
    if isinstance(frame, AckFrame):
        flags = ACK_NAK if frame.nak else 0
        return bytes([Kind.ACK]) + AckBody.build(dict(xfer=frame.xfer, offset=frame.offset, flags=flags))
    if isinstance(frame, ReadyFrame):
        return bytes([Kind.READY]) + ReadyBody.build(
            dict(
                xfer=frame.xfer,
                offset=frame.offset,
                chunk=frame.chunk,
                window=frame.window,
                prefix_sha256=frame.prefix_sha256,
            )
        )
    if isinstance(frame, AbortFrame):
        return bytes([Kind.ABORT]) + AbortBody.build(dict(xfer=frame.xfer))
    raise TypeError(f"not a frame: {frame!r}")


def frame_size(frame: Frame) -> int:
    """Decoded size (kind .. crc) that a receiver compares with its maximum frame."""
    return len(_body(frame)) + 4


def encode_frame(frame: Frame) -> bytes:
    """Bytes to put on the wire for one frame, delimiter included."""
    body = _body(frame)
    body += crc32(body).to_bytes(4, "little")
    return cobs_encode(body) + DELIMITER


def parse_body(body: bytes) -> Frame | FrameError:
    """Decode one unstuffed frame (kind .. crc)."""
    if len(body) < 5:
        return FrameError(FrameErrorReason.SHORT, f"{len(body)} bytes is shorter than a frame")
    content, crc = body[:-4], int.from_bytes(body[-4:], "little")
    if crc32(content) != crc:
        return FrameError(FrameErrorReason.CRC, "CRC-32 mismatch")
    kind, rest = content[0], content[1:]
    try:
        if kind == Kind.JSON:
            return JsonFrame(rest)
        if kind == Kind.DATA:
            if len(rest) < DATA_HEADER_SIZE:
                raise ValueError
            h = DataHeader.parse(rest)
            return DataFrame(h.xfer, h.offset, rest[DATA_HEADER_SIZE:])
        if kind == Kind.ACK:
            if len(rest) != ACK_SIZE:
                raise ValueError
            a = AckBody.parse(rest)
            return AckFrame(a.xfer, a.offset, bool(a.flags & ACK_NAK))
        if kind == Kind.READY:
            if len(rest) != READY_SIZE:
                raise ValueError
            r = ReadyBody.parse(rest)
            return ReadyFrame(r.xfer, r.offset, r.chunk, r.window, bytes(r.prefix_sha256))
        if kind == Kind.ABORT:
            if len(rest) != ABORT_SIZE:
                raise ValueError
            return AbortFrame(AbortBody.parse(rest).xfer)
    except ValueError:
        return FrameError(FrameErrorReason.HEADER, f"{Kind(kind).name} frame with a malformed header")
    return FrameError(FrameErrorReason.KIND, f"unknown frame kind 0x{kind:02x}")


class FrameDecoder:
    """Splits a byte stream into frames. Resynchronises at the next 0x00 after any error."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._max_encoded = cobs_max_encoded(max_frame)
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        events: list[Frame | FrameError] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._append(data[start:])
                return events
            self._append(data[start:end])
            if self._discarding:
                self._discarding = False
                events.append(
                    FrameError(FrameErrorReason.TOO_LARGE, f"frame exceeds the maximum of {self.max_frame} bytes")
                )
            elif self._buf:
                events.append(self._decode(bytes(self._buf)))
            self._buf.clear()
            start = end + 1

    def _append(self, piece: bytes) -> None:
        if self._discarding or not piece:
            return
        if len(self._buf) + len(piece) > self._max_encoded:
            self._buf.clear()
            self._discarding = True  # reported at the delimiter: answering mid-frame would collide
            return
        self._buf += piece

    def _decode(self, encoded: bytes) -> Frame | FrameError:
        try:
            body = cobs_decode(encoded)
        except ValueError as exc:
            return FrameError(FrameErrorReason.COBS, str(exc))
        if len(body) > self.max_frame:
            return FrameError(FrameErrorReason.TOO_LARGE, f"frame exceeds the maximum of {self.max_frame} bytes")
        return parse_body(body)
