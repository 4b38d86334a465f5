"""Intel HEX images: parsed by hand, checked, turned into the raw bytes a section holds.

Records (`:LLAAAATT<data>CC`): 00 data, 01 end of file, 02 extended segment address,
03 start segment address, 04 extended linear address, 05 start linear address. Every
record's checksum is verified and every line must be a record; the file must end with
an end-of-file record (a truncated download is caught here, not on the device).

The image sent to the device is the span from the section's base address to the end of
the last data byte, gaps filled with 0xFF (erased NOR flash). It is written to a
temporary file record by record (two passes over the text), so memory stays flat.

    hx = read_hex("micropython.hex")            # segments, start address
    binary = to_binary(hx, base=0x0, size=0x180000)   # -> HexBinary(path, base, size, skipped)
"""

from __future__ import annotations

import atexit
import bisect
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import ImageError

DATA, EOF, EXT_SEGMENT, START_SEGMENT, EXT_LINEAR, START_LINEAR = range(6)
#: Largest stretch of 0xFF the host fills between two pieces of data without being told
#: where the section ends (a hex with data 256 MiB apart holds two memory regions, not one image).
MAX_GAP = 1 << 20
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Segment:
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"0x{self.start:x}..0x{self.end:x} ({self.size} bytes)"


@dataclass
class HexFile:
    path: Path
    segments: list[Segment]  # sorted, merged where contiguous
    start_address: int | None = None  # from a 03 (CS:IP as a linear address) or 05 record
    records: int = 0

    @property
    def lowest(self) -> int:
        return self.segments[0].start

    @property
    def highest(self) -> int:
        return self.segments[-1].end


@dataclass
class HexBinary:
    """The raw image made from a hex file: a temporary .bin and the address its first byte goes to."""

    path: Path
    base: int
    size: int
    hexfile: HexFile
    skipped: list[Segment] = field(default_factory=list)  # data left out: beyond the section's end


def looks_like_hex(head: bytes) -> bool:
    """True when `head` (the first bytes of a file) starts with a valid Intel HEX record."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b":"):
        return False
    line = text.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        _parse_line(line, 1)
    except ImageError:
        return False
    return True


def _parse_line(line: bytes, lineno: int) -> tuple[int, int, bytes]:
    """(type, 16-bit offset, data) of one record line; ImageError saying what is wrong."""
    if not line.startswith(b":"):
        raise ImageError(f"line {lineno} is not an Intel HEX record (it does not start with ':')")
    digits = line[1:]
    if len(digits) < 10 or len(digits) % 2 or not _HEXDIGITS.issuperset(digits):
        raise ImageError(f"line {lineno} is not an Intel HEX record (bad hex digits or length)")
    raw = bytes.fromhex(digits.decode("ascii"))
    count, offset, rtype = raw[0], int.from_bytes(raw[1:3], "big"), raw[3]
    if len(raw) != count + 5:
        raise ImageError(f"line {lineno}: the record says {count} data bytes but holds {len(raw) - 5}")
    if sum(raw) & 0xFF:
        expected = (-sum(raw[:-1])) & 0xFF
        raise ImageError(f"line {lineno}: checksum 0x{raw[-1]:02X} is wrong (expected 0x{expected:02X})")
    if rtype > START_LINEAR:
        raise ImageError(f"line {lineno}: unknown record type 0x{rtype:02X}")
    return rtype, offset, raw[4:-1]


def _records(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(line number, absolute address, type, data) of every record up to the end-of-file record."""
    upper = 0  # extended linear address << 16, or extended segment address << 4
    seen_eof = False
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        for lineno, raw_line in enumerate(f, 1):
            line = raw_line.strip()
            if lineno == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line:
                continue
            if seen_eof:
                raise ImageError(f"{path}: line {lineno} follows the end-of-file record")
            try:
                rtype, offset, data = _parse_line(line, lineno)
            except ImageError as exc:
                raise ImageError(f"{path}: {exc}") from None
            if rtype == DATA:
                yield lineno, upper + offset, rtype, data
                continue
            want = {EOF: 0, EXT_SEGMENT: 2, START_SEGMENT: 4, EXT_LINEAR: 2, START_LINEAR: 4}[rtype]
            if len(data) != want:
                raise ImageError(f"{path}: line {lineno}: a type {rtype:02X} record holds {want} bytes, not {len(data)}")
            if rtype == EOF:
                seen_eof = True
            elif rtype == EXT_SEGMENT:
                upper = int.from_bytes(data, "big") << 4
            elif rtype == EXT_LINEAR:
                upper = int.from_bytes(data, "big") << 16
            yield lineno, 0, rtype, data
    if not seen_eof:
        raise ImageError(f"{path} ends without an end-of-file record (:00000001FF): truncated?")


class _Intervals:
    """Sorted, merged [start, end) intervals; refuses overlaps (two records for one byte)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int, where: str) -> None:
        i = bisect.bisect_right(self.starts, start)
        if (i and self.ends[i - 1] > start) or (i < len(self.starts) and self.starts[i] < end):
            raise ImageError(f"{where}: data at 0x{start:x} overlaps data given earlier")
        if i and self.ends[i - 1] == start:  # extends the interval before it
            self.ends[i - 1] = end
            if i < len(self.starts) and self.starts[i] == end:
                self.ends[i - 1] = self.ends.pop(i)
                self.starts.pop(i)
        elif i < len(self.starts) and self.starts[i] == end:
            self.starts[i] = start
        else:
            self.starts.insert(i, start)
            self.ends.insert(i, end)


def read_hex(path: str | Path) -> HexFile:
    """Parse and check the whole file (no data kept in memory); ImageError naming the line at fault."""
    path = Path(path)
    intervals = _Intervals()
    start_address: int | None = None
    count = 0
    for lineno, address, rtype, data in _records(path):
        count += 1
        if rtype == DATA and data:
            intervals.add(address, address + len(data), f"{path}: line {lineno}")
        elif rtype == START_SEGMENT:
            start_address = (int.from_bytes(data[:2], "big") << 4) + int.from_bytes(data[2:], "big")
        elif rtype == START_LINEAR:
            start_address = int.from_bytes(data, "big")
    if not intervals.starts:
        raise ImageError(f"{path} holds no data records")
    segments = [Segment(s, e) for s, e in zip(intervals.starts, intervals.ends)]
    return HexFile(path, segments, start_address, count)


_temp_dirs: list[str] = []


@atexit.register
def _remove_temp() -> None:
    for folder in _temp_dirs:
        shutil.rmtree(folder, ignore_errors=True)


def to_binary(
    hx: HexFile,
    base: int | None = None,
    size: int | None = None,
    out: str | Path | None = None,
) -> HexBinary:
    """The raw image for a section at `base` (default: the hex's lowest address).

    The hex's first data byte must be at `base` exactly (a hex linked for another address is
    refused). With `size` (the section's size), data at or past `base + size` is left out and
    listed in `skipped` (another memory region such as a UICR or EEPROM block); without it,
    a gap of more than MAX_GAP bytes is refused rather than filled.
    """
    start = hx.lowest if base is None else base
    if hx.lowest != start:
        where = "below" if hx.lowest < start else "above"
        raise ImageError(
            f"{hx.path} starts at 0x{hx.lowest:x}, {where} the section's base address 0x{start:x}: "
            "it was built for another address"
        )
    kept, skipped = [], []
    for seg in hx.segments:
        if size is not None and seg.start >= start + size:
            skipped.append(seg)
        elif size is not None and seg.end > start + size:
            raise ImageError(
                f"{hx.path}: data {seg} runs past the end of the section (0x{start:x}..0x{start + size:x})"
            )
        else:
            kept.append(seg)
    if size is None:
        for a, b in zip(kept, kept[1:]):
            if b.start - a.end > MAX_GAP:
                raise ImageError(
                    f"{hx.path} holds data at {a} and at {b}, {b.start - a.end} bytes apart: "
                    "give the section's size (--section-size) to leave out what lies beyond it"
                )
    end = kept[-1].end
    if out is None:
        folder = tempfile.mkdtemp(prefix="uartupdate-hex-")
        _temp_dirs.append(folder)
        out = Path(folder, hx.path.stem + ".bin")
    out = Path(out)
    with open(out, "wb") as f:
        block = b"\xff" * (1 << 16)
        for pos in range(0, end - start, len(block)):
            f.write(block[: min(len(block), end - start - pos)])
        f.flush()
        fd = f.fileno()
        for _, address, rtype, data in _records(hx.path):
            if rtype == DATA and data and start <= address < end:
                os.pwrite(fd, data, address - start)
    return HexBinary(out, start, end - start, hx, skipped)
