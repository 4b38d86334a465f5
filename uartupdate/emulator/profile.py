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
    #: Offset of the second slot (same size) of a dual-slot section; None: single slot.
    slot_b: int | None = None
    #: Only images signed by a trusted key are accepted ("sha256" alone is refused).
    require_signature: bool = False
    #: Older versions may be installed; when False, versions must be semantic and only grow.
    allow_downgrade: bool = True
    #: Boots a new image of a dual-slot section gets to be confirmed before the bootloader reverts.
    trial_boots: int = 1
    #: The image confirms itself when it boots (the firmware reached its confirmed state).
    auto_confirm: bool = False

    @property
    def dual_slot(self) -> bool:
        return self.slot_b is not None

    def slot_offset(self, slot: int) -> int:
        return self.offset if slot == 0 else self.slot_b  # type: ignore[return-value]


def _section(s: dict[str, Any]) -> SectionSpec:
    policy = s.get("policy", {})
    unknown = set(policy) - {"signature", "downgrade", "trial_boots", "confirm"}
    if unknown:
        raise ProfileError(f"section {s.get('name')!r}: unknown policy keys {sorted(unknown)}")
    if policy.get("signature", "optional") not in ("optional", "required"):
        raise ProfileError("policy.signature is 'optional' or 'required'")
    if policy.get("downgrade", "allow") not in ("allow", "refuse"):
        raise ProfileError("policy.downgrade is 'allow' or 'refuse'")
    if policy.get("confirm", "manual") not in ("manual", "auto"):
        raise ProfileError("policy.confirm is 'manual' or 'auto'")
    return SectionSpec(
        name=str(s["name"]),
        offset=int(s["offset"]),
        size=int(s["size"]),
        writable=bool(s["writable"]),
        version=str(s.get("version", "")),
        slot_b=int(s["slot_b"]) if s.get("slot_b") is not None else None,
        require_signature=policy.get("signature", "optional") == "required",
        allow_downgrade=policy.get("downgrade", "allow") == "allow",
        trial_boots=int(policy.get("trial_boots", 1)),
        auto_confirm=policy.get("confirm", "manual") == "auto",
    )


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
    #: Public keys (PEM) whose signatures the bootloader trusts.
    trusted_keys: tuple[bytes, ...] = ()
    #: Largest deflate window (2**bits bytes) the device can inflate with; 0: no compression.
    deflate_window_bits: int = 15
    #: Baud rates the device can switch to (Sys.SetBaud).
    bauds: tuple[int, ...] = (115200, 230400, 460800, 921600, 1000000, 2000000, 3000000)

    def section(self, name: str) -> SectionSpec | None:
        return next((s for s in self.sections if s.name == name), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> Profile:
        """`base`: folder that relative key files are read from (the profile's own)."""
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
                sections=tuple(_section(s) for s in d["sections"]),
                trusted_keys=tuple(_keys(d.get("keys", []), base)),
                access_key=str(d["access_key"]) if d.get("access_key") is not None else None,
                deflate_window_bits=int(link.get("deflate_window_bits", 15)),
                bauds=tuple(int(b) for b in link.get("bauds", cls.bauds)),
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
        if self.deflate_window_bits and not 9 <= self.deflate_window_bits <= 15:
            raise ProfileError("link.deflate_window_bits must be 9..15, or 0 for no compression")
        if self.max_frame < self.chunk + 64 or self.buffers < 1:
            raise ProfileError("link.max_frame must hold a chunk and its header; buffers >= 1")
        if self.metadata.size < 2 * sector:
            raise ProfileError("metadata needs two sectors (two copies)")
        regions = [("metadata", self.metadata), ("staging", self.staging)]
        regions += [(s.name, Region(s.offset, s.size)) for s in self.sections]
        regions += [(f"{s.name} slot b", Region(s.slot_b, s.size)) for s in self.sections if s.slot_b is not None]
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
        for s in self.sections:
            if s.dual_slot and not s.writable:
                raise ProfileError(f"{s.name}: only writable sections have two slots")
            if not 1 <= s.trial_boots <= 255:
                raise ProfileError(f"{s.name}: policy.trial_boots must be 1..255")
        largest = max((s.size for s in self.sections if s.writable and not s.dual_slot), default=0)
        if self.staging.size - staging_header_size(self, self.staging.size) < largest:
            raise ProfileError("staging area cannot hold the largest writable section and its header")


def _keys(entries: list[Any], base: Path | None) -> list[bytes]:
    """PEM public keys from the profile's `keys`: each {"pem": "..."} or {"file": "path"}."""
    from ..images.signing import KeyError_, load_public_key

    keys = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not ({"pem", "file"} & entry.keys()):
            raise ProfileError(f"keys[{i}] must be an object with 'pem' or 'file'")
        if "pem" in entry:
            pem = str(entry["pem"]).encode()
        else:
            path = Path(entry["file"])
            path = path if path.is_absolute() or base is None else base / path
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ProfileError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            load_public_key(pem, f"keys[{i}]")
        except KeyError_ as exc:
            raise ProfileError(str(exc)) from None
        keys.append(pem)
    return keys


def staging_header_size(profile: Profile, staging_size: int) -> int:
    """Bytes (whole sectors) at the start of staging: transfer key, then one journal unit per sector."""
    sectors = staging_size // profile.sector_size
    raw = 64 + sectors * profile.write_align
    return -(-raw // profile.sector_size) * profile.sector_size


def load_profile(path: str | Path | None = None) -> Profile:
    """The profile at `path`, or one shipped in the package by name ("default", "ab"); None: default."""
    builtin = resources.files("uartupdate.emulator") / "profiles" / f"{path or 'default'}.json"
    if path is None or (not Path(path).exists() and "/" not in str(path) and builtin.is_file()):
        text = builtin.read_text("utf-8")
        source = f"built-in profile {path or 'default'}"
        path = None
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
    return Profile.from_dict(data, Path(path).parent if path is not None else None)
