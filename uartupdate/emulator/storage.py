"""What the bootloader keeps in flash: the section table and the staging area.

Metadata: two copies, one per sector, each `record | crc32`. The valid copy with the
higher sequence number wins; a write goes to the other sector, so a write torn by a
power cut leaves the previous copy standing.

Staging: new images stream here, never over a running section. Its first sectors hold
a header (the transfer's key) and a journal, one write unit per staged sector,
programmed to 0x00 once that sector is whole: NOR lets a unit be programmed once
after the erase, so progress survives a reset without rewriting anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from construct import Array, Bytes, Const, Int8ul, Int32ul, PaddedString, Struct, StreamError, ConstructError

from ..core.framing import crc32
from .flash import NorFlash
from .profile import MAX_SECTION_NAME, MAX_VERSION, Profile, staging_header_size

SectionRecord = Struct(
    "name" / PaddedString(MAX_SECTION_NAME, "utf8"),
    "version" / PaddedString(MAX_VERSION, "utf8"),
    "size" / Int32ul,
    "sha256" / Bytes(32),
)
INSTALL_NONE, INSTALL_COPYING = 0, 1
MetadataRecord = Struct(
    "magic" / Const(b"UUMD"),
    "seq" / Int32ul,
    "install" / Int8ul,  # INSTALL_COPYING: staging -> section copy was under way
    "install_section" / PaddedString(MAX_SECTION_NAME, "utf8"),
    "count" / Int8ul,
    "sections" / Array(lambda this: this.count, SectionRecord),
)
StagingHeader = Struct(
    "magic" / Const(b"UUST"),
    "key" / Bytes(32),
    "size" / Int32ul,
    "section" / PaddedString(MAX_SECTION_NAME, "utf8"),
)
JOURNAL_START = 64  # offset of the journal within the staging header


@dataclass
class SectionState:
    name: str
    version: str
    size: int  # bytes of the installed image (0: factory content / unknown)
    sha256: bytes


@dataclass
class Metadata:
    seq: int
    sections: dict[str, SectionState] = field(default_factory=dict)
    install_section: str | None = None


def _pad(data: bytes, align: int, fill: int = 0xFF) -> bytes:
    return data + bytes([fill]) * (-len(data) % align)


class MetadataStore:
    def __init__(self, flash: NorFlash, profile: Profile) -> None:
        self.flash = flash
        self.profile = profile
        self._copies = [profile.metadata.offset + i * profile.sector_size for i in range(2)]

    def _read_copy(self, offset: int) -> Metadata | None:
        raw = self.flash.read(offset, self.profile.sector_size)
        try:
            rec = MetadataRecord.parse(raw)
        except (StreamError, ConstructError, UnicodeDecodeError):
            return None
        length = len(MetadataRecord.build(rec))
        if int.from_bytes(raw[length : length + 4], "little") != crc32(raw[:length]):
            return None
        meta = Metadata(seq=rec.seq, install_section=rec.install_section if rec.install else None)
        for s in rec.sections:
            meta.sections[s.name] = SectionState(s.name, s.version, s.size, bytes(s.sha256))
        return meta

    def load(self) -> Metadata | None:
        """The newest valid copy, or None on a blank (or wholly corrupted) flash."""
        copies = [m for m in (self._read_copy(o) for o in self._copies) if m is not None]
        return max(copies, key=lambda m: m.seq, default=None)

    def save(self, meta: Metadata) -> None:
        """Write `meta` as the next sequence into the sector that does not hold the newest copy."""
        current = [self._read_copy(o) for o in self._copies]
        seqs = [m.seq if m is not None else -1 for m in current]
        target = self._copies[0] if seqs[0] <= seqs[1] else self._copies[1]
        meta.seq = max(seqs) + 1
        body = MetadataRecord.build(
            dict(
                seq=meta.seq,
                install=INSTALL_COPYING if meta.install_section else INSTALL_NONE,
                install_section=meta.install_section or "",
                count=len(meta.sections),
                sections=[
                    dict(name=s.name, version=s.version, size=s.size, sha256=s.sha256) for s in meta.sections.values()
                ],
            )
        )
        record = _pad(body + crc32(body).to_bytes(4, "little"), self.profile.write_align)
        self.flash.erase(target, self.profile.sector_size)
        self.flash.program(target, record)


class Staging:
    """The staging area: header, journal, then image data from `data_offset`."""

    def __init__(self, flash: NorFlash, profile: Profile) -> None:
        self.flash = flash
        self.profile = profile
        self.offset = profile.staging.offset
        header = staging_header_size(profile, profile.staging.size)
        self.data_offset = self.offset + header
        self.capacity = profile.staging.size - header

    def read_header(self) -> tuple[bytes, int, str] | None:
        raw = self.flash.read(self.offset, JOURNAL_START)
        try:
            h = StagingHeader.parse(raw)
        except (StreamError, ConstructError, UnicodeDecodeError):
            return None
        return bytes(h.key), h.size, h.section

    def staged_bytes(self, size: int) -> int:
        """Bytes of the image known to be whole in staging, from the journal."""
        sector, align = self.profile.sector_size, self.profile.write_align
        sectors = -(-size // sector)
        journal = self.flash.read(self.offset + JOURNAL_START, sectors * align)
        done = 0
        while done < sectors and journal[done * align : (done + 1) * align] == bytes(align):
            done += 1
        return min(done * sector, size)

    def start(self, key: bytes, size: int, section: str) -> None:
        header = staging_header_size(self.profile, self.profile.staging.size)
        self.flash.erase(self.offset, header)
        raw = StagingHeader.build(dict(key=key, size=size, section=section))
        self.flash.program(self.offset, _pad(raw, self.profile.write_align))

    def mark_sector_done(self, index: int) -> None:
        align = self.profile.write_align
        self.flash.program(self.offset + JOURNAL_START + index * align, bytes(align))

    def clear(self) -> None:
        self.flash.erase(self.offset, self.profile.sector_size)

    def digest(self, length: int, tail: bytes = b"") -> bytes:
        """SHA-256 of the first `length` staged bytes, then `tail` (bytes still in RAM)."""
        h = hashlib.sha256()
        step = 1 << 16
        for pos in range(0, length, step):
            h.update(self.flash.read(self.data_offset + pos, min(step, length - pos)))
        h.update(tail)
        return h.digest()
