"""Device profiles: what flash the emulated board has and how it is laid out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

MAX_SECTION_NAME = 16  # bytes of UTF-8, as the metadata record stores them
MAX_VERSION = 32


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class SectionSpec:
    name: str
    offset: int
    size: int
    writable: bool
    version: str


@dataclass(frozen=True)
class Region:
    offset: int
    size: int


@dataclass(frozen=True)
class Profile:
    name: str
    address: str
    flash_size: int
    sector_size: int
    write_align: int
    erase_ms_per_sector: float
    program_us_per_byte: float
    max_frame: int
    chunk: int
    buffers: int
    metadata: Region
    staging: Region
    sections: tuple[SectionSpec, ...]
    #: Pre-shared key every request envelope must carry as `key`; None: no key required.
    access_key: str | None = None

    def section(self, name: str) -> SectionSpec | None:
        return next((s for s in self.sections if s.name == name), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        try:
            flash, link = d["flash"], d.get("link", {})
            profile = cls(
                name=str(d.get("name", "unnamed")),
                address=str(d["address"]),
                flash_size=int(flash["size"]),
                sector_size=int(flash["sector_size"]),
                write_align=int(flash.get("write_align", 4)),
                erase_ms_per_sector=float(flash.get("erase_ms_per_sector", 0)),
                program_us_per_byte=float(flash.get("program_us_per_byte", 0)),
                max_frame=int(link.get("max_frame", 65536)),
                chunk=int(link.get("chunk", 2048)),
                buffers=int(link.get("buffers", 4)),
                metadata=Region(int(d["metadata"]["offset"]), int(d["metadata"]["size"])),
                staging=Region(int(d["staging"]["offset"]), int(d["staging"]["size"])),
                sections=tuple(
                    SectionSpec(
                        name=str(s["name"]),
                        offset=int(s["offset"]),
                        size=int(s["size"]),
                        writable=bool(s["writable"]),
                        version=str(s.get("version", "")),
                    )
                    for s in d["sections"]
                ),
                access_key=str(d["access_key"]) if d.get("access_key") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"device profile is missing or mistypes {exc}") from None
        profile.validate()
        return profile

    def validate(self) -> None:
        sector = self.sector_size
        if self.flash_size % sector or sector % self.write_align:
            raise ProfileError("flash size, sector size and write alignment do not divide")
        if not 64 <= self.chunk <= 0xFFFF or self.chunk % self.write_align:
            raise ProfileError("link.chunk must be 64..65535 and a multiple of the write alignment")
        if self.max_frame < self.chunk + 64 or self.buffers < 1:
            raise ProfileError("link.max_frame must hold a chunk and its header; buffers >= 1")
        if self.metadata.size < 2 * sector:
            raise ProfileError("metadata needs two sectors (two copies)")
        regions = [("metadata", self.metadata), ("staging", self.staging)]
        regions += [(s.name, Region(s.offset, s.size)) for s in self.sections]
        for name, r in regions:
            if r.offset % sector or r.size % sector or r.size <= 0:
                raise ProfileError(f"{name} is not a whole number of sectors")
            if r.offset + r.size > self.flash_size:
                raise ProfileError(f"{name} ends past the end of the flash")
        ordered = sorted(regions, key=lambda nr: nr[1].offset)
        for (a, ra), (b, rb) in zip(ordered, ordered[1:]):
            if ra.offset + ra.size > rb.offset:
                raise ProfileError(f"{a} overlaps {b}")
        names = [s.name for s in self.sections]
        if len(set(names)) != len(names):
            raise ProfileError("section names must be unique")
        for s in self.sections:
            if not s.name or len(s.name.encode()) > MAX_SECTION_NAME:
                raise ProfileError(f"section name {s.name!r} must be 1..{MAX_SECTION_NAME} bytes")
            if len(s.version.encode()) > MAX_VERSION:
                raise ProfileError(f"version of {s.name} is longer than {MAX_VERSION} bytes")
        largest = max((s.size for s in self.sections if s.writable), default=0)
        if self.staging.size - staging_header_size(self, self.staging.size) < largest:
            raise ProfileError("staging area cannot hold the largest writable section and its header")


def staging_header_size(profile: Profile, staging_size: int) -> int:
    """Bytes (whole sectors) at the start of staging: transfer key, then one journal unit per sector."""
    sectors = staging_size // profile.sector_size
    raw = 64 + sectors * profile.write_align
    return -(-raw // profile.sector_size) * profile.sector_size


def load_profile(path: str | Path | None = None) -> Profile:
    """The profile at `path`, or the default one shipped in the package."""
    if path is None:
        text = (resources.files("uartupdate.emulator") / "profiles" / "default.json").read_text("utf-8")
        source = "default profile"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot read device profile {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{source} must hold a JSON object")
    return Profile.from_dict(data)
