"""Serial ports on this host, and --port values that name a board by USB identity.

`uartupdate ports` lists what pyserial's list_ports finds. A --port value is one of:

    /dev/ttyUSB0, COM3, /dev/pts/3      a device path: used as it is
    socket://…, rfc2217://…, emu://…    a pyserial URL: used as it is
    0403:6001                           USB VID:PID (hex): the one port of that adapter
    vid=0x0403,pid=6001,serial=A1B2     esptool's --port-filter keys (vid, pid, serial, name), all must match
    serial=A1B2C3  or  A1B2C3           a USB serial number (exact, or a unique prefix of at least 4)

A filter that matches no port is a link error (exit 3: the board is not plugged in); one that
matches several is a usage error (exit 2) naming them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import LinkError, UsageError

VIDPID = re.compile(r"(?i)^(?:0x)?([0-9a-f]{1,4}):(?:0x)?([0-9a-f]{1,4})$")
FILTER_KEYS = ("vid", "pid", "serial", "name")


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    manufacturer: str | None = None
    location: str | None = None

    @property
    def vid_pid(self) -> str | None:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "description": self.description,
            "vid_pid": self.vid_pid,
            "serial_number": self.serial_number,
            "manufacturer": self.manufacturer,
            "location": self.location,
        }


def list_ports() -> list[PortInfo]:
    """Every serial port pyserial finds, sorted by device name."""
    from serial.tools import list_ports as lp

    found = []
    for p in sorted(lp.comports()):
        description = p.description if p.description and p.description != "n/a" else ""
        found.append(PortInfo(p.device, description, p.vid, p.pid, p.serial_number, p.manufacturer, p.location))
    return found


def is_filter(spec: str) -> bool:
    """Does `spec` name ports by USB identity rather than by path or URL?"""
    if "://" in spec or spec.startswith(("/", "\\\\", ".")) or re.fullmatch(r"(?i)com\d+", spec):
        return False
    if VIDPID.match(spec):
        return True
    return "=" in spec or not os.path.exists(spec)


def _parse_filter(spec: str) -> dict[str, str]:
    m = VIDPID.match(spec)
    if m:
        return {"vid": m.group(1), "pid": m.group(2)}
    if "=" not in spec:
        return {"serial": spec}
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in FILTER_KEYS or not value.strip():
            raise UsageError(f"bad port filter {spec!r}: use VID:PID, or key=value pairs with keys {', '.join(FILTER_KEYS)}")
        out[key] = value.strip()
    return out


def _hex_id(value: str, spec: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise UsageError(f"bad port filter {spec!r}: {value!r} is not a hexadecimal USB id") from None


def match_ports(spec: str, ports: Iterable[PortInfo]) -> list[PortInfo]:
    """The ports a filter matches (VID:PID, key=value pairs, or a serial number)."""
    want = _parse_filter(spec)
    vid = _hex_id(want["vid"], spec) if "vid" in want else None
    pid = _hex_id(want["pid"], spec) if "pid" in want else None
    serial = want.get("serial")
    name = want.get("name")
    bare_serial = "=" not in spec and not VIDPID.match(spec)
    hits = []
    for p in ports:
        if vid is not None and p.vid != vid:
            continue
        if pid is not None and p.pid != pid:
            continue
        if name is not None and name.lower() not in f"{p.device} {p.description}".lower():
            continue
        if serial is not None:
            sn = p.serial_number or ""
            if sn != serial and not (bare_serial and len(serial) >= 4 and sn.startswith(serial)):
                continue
        hits.append(p)
    if serial is not None and bare_serial:  # an exact serial number beats prefixes of longer ones
        exact = [p for p in hits if p.serial_number == serial]
        hits = exact or hits
    return hits


def resolve_port(spec: str, ports: list[PortInfo] | None = None) -> str:
    """The device path or URL for a --port value; UsageError when a filter is not one port."""
    if not is_filter(spec):
        return spec
    ports = list_ports() if ports is None else ports
    hits = match_ports(spec, ports)
    if len(hits) == 1:
        return hits[0].device
    if not hits:
        if "=" not in spec and not VIDPID.match(spec):
            raise LinkError(f"cannot open {spec}: no such port, and no USB serial number matches it (see `uartupdate ports`)")
        raise LinkError(f"no serial port matches {spec}: is the board plugged in? (see `uartupdate ports`)")
    names = ", ".join(f"{p.device} ({p.serial_number or 'no serial'})" for p in hits)
    raise UsageError(f"{spec} matches {len(hits)} ports: {names}; name one by serial number or path")


def format_ports(ports: list[PortInfo]) -> str:
    rows = [("DEVICE", "DESCRIPTION", "VID:PID", "SERIAL")]
    rows += [(p.device, p.description or "-", p.vid_pid or "-", p.serial_number or "-") for p in ports]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
