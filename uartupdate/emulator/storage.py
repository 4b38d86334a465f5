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

SlotRecord = Struct(
    "version" / PaddedString(MAX_VERSION, "utf8"),
    "size" / Int32ul,  # bytes of the image in the slot (0: factory content / empty)
    "sha256" / Bytes(32),
)
NO_SLOT = 0xFF
SectionRecord = Struct(
    "name" / PaddedString(MAX_SECTION_NAME, "utf8"),
    "active" / Int8ul,  # the confirmed slot
    "pending" / Int8ul,  # the slot to try at the next boots, or NO_SLOT
    "tries" / Int8ul,  # trial boots left for the pending slot
    "slots" / Array(2, SlotRecord),
)
INSTALL_NONE, INSTALL_COPYING = 0, 1
MetadataRecord = Struct(
    "magic" / Const(b"UUM2"),
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
class SlotState:
    version: str
    size: int = 0
    sha256: bytes = bytes(32)


@dataclass
class SectionState:
    name: str
    slots: list[SlotState]
    active: int = 0
    pending: int | None = None
    tries: int = 0

    @classmethod
    def factory(cls, name: str, version: str) -> SectionState:
        return cls(name, [SlotState(version), SlotState("")])

    @property
    def version(self) -> str:
        """The confirmed image's version."""
        return self.slots[self.active].version

    @property
    def size(self) -> int:
        return self.slots[self.active].size

    @property
    def sha256(self) -> bytes:
        return self.slots[self.active].sha256


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
            slots = [SlotState(x.version, x.size, bytes(x.sha256)) for x in s.slots]
            pending = None if s.pending == NO_SLOT else s.pending
            meta.sections[s.name] = SectionState(s.name, slots, s.active, pending, s.tries)
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
                    dict(
                        name=s.name,
                        active=s.active,
                        pending=NO_SLOT if s.pending is None else s.pending,
                        tries=s.tries,
                        slots=[dict(version=x.version, size=x.size, sha256=x.sha256) for x in s.slots],
                    )
                    for s in meta.sections.values()
                ],
            )
        )
        record = _pad(body + crc32(body).to_bytes(4, "little"), self.profile.write_align)
        self.flash.erase(target, self.profile.sector_size)
        self.flash.program(target, record)


class Staging:
    """The staging area: a header and journal, then image data.

    Single-slot sections stage into the data area after the header; dual-slot sections
    stage straight into their inactive slot (`data_offset` of each call).
    """

    def __init__(self, flash: NorFlash, profile: Profile) -> None:
        self.flash = flash
        self.profile = profile
        self.offset = profile.staging.offset
        self.header_size = staging_header_size(profile, profile.staging.size)
        self.data_offset = self.offset + self.header_size
        self.capacity = profile.staging.size - self.header_size

    def read_header(self) -> tuple[bytes, int, str] | None:
        raw = self.flash.read(self.offset, JOURNAL_START)
        try:
            h = StagingHeader.parse(raw)
        except (StreamError, ConstructError, UnicodeDecodeError):
            return None
        return bytes(h.key), h.size, h.section

    def staged_bytes(self, size: int) -> int | None:
        """Bytes of the image known to be whole, from the journal; None if the journal is torn."""
        sector, align = self.profile.sector_size, self.profile.write_align
        sectors = -(-size // sector)
        journal = self.flash.read(self.offset + JOURNAL_START, sectors * align)
        units = [journal[i * align : (i + 1) * align] for i in range(sectors)]
        done = 0
        while done < sectors and units[done] == bytes(align):
            done += 1
        if any(u != b"\xff" * align for u in units[done:]):
            return None  # an entry was cut short mid-program: nothing after it can be trusted
        return min(done * sector, size)

    def start(self, key: bytes, size: int, section: str) -> None:
        self.flash.erase(self.offset, self.header_size)
        raw = StagingHeader.build(dict(key=key, size=size, section=section))
        self.flash.program(self.offset, _pad(raw, self.profile.write_align))

    def mark_sector_done(self, index: int) -> None:
        align = self.profile.write_align
        self.flash.program(self.offset + JOURNAL_START + index * align, bytes(align))

    def clear(self) -> None:
        self.flash.erase(self.offset, self.profile.sector_size)

    def digest(self, data_offset: int, length: int, tail: bytes = b"") -> bytes:
        """SHA-256 of `length` bytes of flash at `data_offset`, then `tail` (bytes still in RAM)."""
        return flash_digest(self.flash, data_offset, length, tail)


def flash_digest(flash: NorFlash, offset: int, length: int, tail: bytes = b"") -> bytes:
    h = hashlib.sha256()
    step = 1 << 16
    for pos in range(0, length, step):
        h.update(flash.read(offset + pos, min(step, length - pos)))
    h.update(tail)
    return h.digest()
