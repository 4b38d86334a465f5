"""Target files: what a board on a test rig has, for the HIL suite and the pytest plugin (TOML).

The schema is documented in hil/README.md; hil/targets/emulator.toml describes the
built-in emulator. Everything is optional except what a test needs: a test that needs
something the file does not say is skipped with the reason.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .reset import parse_sequence

TOP_KEYS = {"name", "port", "baud", "timeout", "retries", "address", "key_file", "sector_size", "strict_sections",
            "sections", "reset", "power", "signatures", "emulator"}
SECTION_KEYS = {"name", "writable", "size", "base", "may_rewrite", "slots", "signature", "restore"}


@dataclass(frozen=True)
class TargetSection:
    name: str
    writable: bool
    size: int | None = None  # bytes; oversize tests need it
    base: int | None = None  # address of the section's first byte (Intel HEX images)
    may_rewrite: bool = False  # destructive tests may write images to it
    slots: int = 1  # 2: a dual-slot section (a new image runs only after a reboot)
    signature: str = "optional"  # "required": only signed images are accepted
    restore: Path | None = None  # image written back after destructive tests


@dataclass
class Target:
    name: str = "unnamed target"
    path: Path | None = None
    port: str | None = None
    baud: int = 115200
    timeout: float = 5.0
    retries: int = 2
    address: str | None = None  # the device's address, used as dst; None: point to point
    key_file: Path | None = None
    sector_size: int = 4096
    strict_sections: bool = False  # the device has exactly these sections
    sections: list[TargetSection] = field(default_factory=list)
    reset_before: str = "no-reset"
    reset_after: str = "no-reset"
    power_off: str | None = None  # shell command that cuts the board's power
    power_on: str | None = None  # shell command that restores it
    power_settle: float = 1.0  # seconds from power on until the bootloader answers
    signature_alg: str | None = None  # the alg the board verifies (ed25519, ecdsa-p256-sha256, rsa-pss-sha256)
    signature_key: Path | None = None  # a private key the board trusts (PEM), for a signed update
    emulator: bool = False
    emulator_profile: Path | None = None  # None: the built-in default profile
    emulator_pace: bool = False  # pace the emulator's line at `baud`

    def section(self, name: str) -> TargetSection | None:
        return next((s for s in self.sections if s.name == name), None)

    def rewritable(self, *, single_slot: bool = True, unsigned: bool = True) -> list[TargetSection]:
        return [
            s for s in self.sections
            if s.writable and s.may_rewrite and (not single_slot or s.slots == 1)
            and (not unsigned or s.signature != "required")
        ]

    @property
    def has_power_control(self) -> bool:
        return self.emulator or bool(self.power_off and self.power_on)

    def key(self) -> str | None:
        if self.key_file is None:
            return None
        try:
            return self.key_file.read_text("utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read key file {self.key_file}: {exc.strerror}") from None


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UsageError(f"{where} must be a non-negative integer")
    return v


def _path(v: Any, base: Path, where: str) -> Path:
    if not isinstance(v, str) or not v:
        raise UsageError(f"{where} must be a path")
    p = Path(v).expanduser()
    return p if p.is_absolute() else base / p


def load_target(path: str | Path) -> Target:
    """Read and check a target file; UsageError with one sentence naming what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read target file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"target file {path} is not valid TOML: {exc}") from None
    return target_from_dict(data, path)


def target_from_dict(data: dict[str, Any], path: Path | None = None) -> Target:
    where = str(path) if path else "target"
    base = path.parent if path else Path.cwd()
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    t = Target(path=path)
    try:
        t.name = str(data.get("name", path.stem if path else t.name))
        t.port = str(data["port"]) if data.get("port") else None
        t.baud = _int(data.get("baud", t.baud), f"{where}: baud")
        t.timeout = float(data.get("timeout", t.timeout))
        t.retries = _int(data.get("retries", t.retries), f"{where}: retries")
        t.address = str(data["address"]) if data.get("address") else None
        t.key_file = _path(data["key_file"], base, f"{where}: key_file") if data.get("key_file") else None
        t.sector_size = _int(data.get("sector_size", t.sector_size), f"{where}: sector_size") or 4096
        t.strict_sections = bool(data.get("strict_sections", False))
        for i, s in enumerate(data.get("sections", [])):
            sw = f"{where}: sections[{i}]"
            if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("writable"), bool):
                raise UsageError(f"{sw} needs a string name and a boolean writable")
            extra = set(s) - SECTION_KEYS
            if extra:
                raise UsageError(f"{sw}: unknown keys {', '.join(sorted(extra))}")
            if s.get("signature", "optional") not in ("optional", "required"):
                raise UsageError(f"{sw}: signature is 'optional' or 'required'")
            t.sections.append(TargetSection(
                name=s["name"],
                writable=s["writable"],
                size=_int(s["size"], f"{sw}.size") if "size" in s else None,
                base=_int(s["base"], f"{sw}.base") if "base" in s else None,
                may_rewrite=bool(s.get("may_rewrite", False)),
                slots=_int(s.get("slots", 1), f"{sw}.slots"),
                signature=s.get("signature", "optional"),
                restore=_path(s["restore"], base, f"{sw}.restore") if s.get("restore") else None,
            ))
        reset = data.get("reset", {})
        t.reset_before = str(reset.get("before", t.reset_before))
        t.reset_after = str(reset.get("after", t.reset_after))
        parse_sequence(t.reset_before)
        parse_sequence(t.reset_after)
        power = data.get("power", {})
        t.power_off = str(power["off"]) if power.get("off") else None
        t.power_on = str(power["on"]) if power.get("on") else None
        t.power_settle = float(power.get("settle_s", t.power_settle))
        if bool(t.power_off) != bool(t.power_on):
            raise UsageError(f"{where}: [power] needs both off and on commands")
        sig = data.get("signatures", {})
        t.signature_alg = str(sig["alg"]) if sig.get("alg") else None
        t.signature_key = _path(sig["key"], base, f"{where}: signatures.key") if sig.get("key") else None
        if "emulator" in data:
            emu = data["emulator"]
            t.emulator = True
            profile = emu.get("profile", "default")
            t.emulator_profile = None if profile == "default" else _path(profile, base, f"{where}: emulator.profile")
            t.emulator_pace = bool(emu.get("pace", False))
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    return t


def target_from_profile(profile: Any, name: str = "uartupdate emulator") -> Target:
    """The target that describes an emulator profile (uartupdate.emulator.profile.Profile)."""
    t = Target(name=name, address=profile.address, sector_size=profile.sector_size, strict_sections=True,
               emulator=True)
    for s in profile.sections:
        t.sections.append(TargetSection(
            name=s.name, writable=s.writable, size=s.size, base=s.offset, may_rewrite=s.writable,
            slots=2 if getattr(s, "slot_b", None) is not None else 1,
            signature="required" if getattr(s, "require_signature", False) else "optional",
        ))
    return t
