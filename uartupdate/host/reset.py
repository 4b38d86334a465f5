"""Reset control through the adapter's DTR and RTS lines (--before / --after).

Many boards wire the USB-serial adapter's control lines to their reset and boot-mode pins
(the ESP32/ESP8266 auto-reset circuit, Arduino's DTR capacitor, an nRF or STM32 board with
RTS on nRST and DTR on BOOT0). A reset sequence is a string of steps joined by `|`, as in
esptool's custom reset sequence:

    D0 / D1        DTR released / asserted (pyserial's dtr = False / True)
    R0 / R1        RTS released / asserted
    U0,1           DTR and RTS set at once (one ioctl where the OS has it)
    W0.1           wait 0.1 seconds

Named sequences:

    no-reset       nothing (the default: the board is already in its bootloader)
    default-reset  the classic ESP pulse: D0|R1|W0.1|D1|R0|W0.05|D0
                   (reset held by RTS while DTR pulls the boot pin, released into the bootloader)
    hard-reset     a reset pulse on RTS only: R1|W0.1|R0 (after an update: run the new image)

A port without control lines (a pseudo-terminal, a socket:// URL, the emulator) is not an
error: the sequence is skipped and the caller is told so once per port.
"""

from __future__ import annotations

import errno
import re
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UsageError

NAMED = {
    "no-reset": "",
    "default-reset": "D0|R1|W0.1|D1|R0|W0.05|D0",
    "hard-reset": "R1|W0.1|R0",
}
_STEP = re.compile(r"^(?:([DR])([01])|U([01]),([01])|W(\d+(?:\.\d*)?|\.\d+))$")
#: errno values of a control-line ioctl on a port that has no control lines.
NO_LINES = {errno.ENOTTY, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODEV, errno.EIO}

_warned: set[str] = set()


@dataclass(frozen=True)
class Step:
    op: str  # "D", "R", "U" or "W"
    dtr: bool | None = None
    rts: bool | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.op == "W":
            return f"W{self.seconds:g}"
        if self.op == "U":
            return f"U{int(bool(self.dtr))},{int(bool(self.rts))}"
        return f"{self.op}{int(bool(self.dtr if self.op == 'D' else self.rts))}"


def parse_sequence(text: str) -> list[Step]:
    """The steps of a named or custom sequence; UsageError naming the bad step."""
    text = NAMED.get(text.strip(), text.strip())
    steps: list[Step] = []
    for raw in filter(None, (s.strip() for s in text.split("|"))):
        m = _STEP.match(raw.upper())
        if not m:
            raise UsageError(
                f"bad reset step {raw!r}: use D0/D1, R0/R1, U<dtr>,<rts>, W<seconds> joined by '|', "
                f"or one of {', '.join(NAMED)}"
            )
        kind, level, u_dtr, u_rts, wait = m.groups()
        if kind == "D":
            steps.append(Step("D", dtr=level == "1"))
        elif kind == "R":
            steps.append(Step("R", rts=level == "1"))
        elif u_dtr is not None:
            steps.append(Step("U", dtr=u_dtr == "1", rts=u_rts == "1"))
        else:
            seconds = float(wait)
            if seconds > 60:
                raise UsageError(f"bad reset step {raw!r}: waits are at most 60 s")
            steps.append(Step("W", seconds=seconds))
    return steps


def check_sequence(text: str) -> str:
    """argparse `type=`: a valid sequence string, unchanged."""
    import argparse

    try:
        parse_sequence(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _set_both(port: Any, dtr: bool, rts: bool) -> None:
    fd = getattr(port, "fd", None)
    try:
        import fcntl
        import termios
    except ImportError:  # Windows: two calls
        fd = None
    if isinstance(fd, int):
        status = struct.unpack("I", fcntl.ioctl(fd, termios.TIOCMGET, struct.pack("I", 0)))[0]
        status = (status | termios.TIOCM_DTR) if dtr else (status & ~termios.TIOCM_DTR)
        status = (status | termios.TIOCM_RTS) if rts else (status & ~termios.TIOCM_RTS)
        fcntl.ioctl(fd, termios.TIOCMSET, struct.pack("I", status))
        port._dtr_state, port._rts_state = dtr, rts  # keep pyserial's idea of the lines right
        return
    port.dtr = dtr
    port.rts = rts


def _no_lines(exc: BaseException) -> bool:
    if isinstance(exc, (NotImplementedError, AttributeError)):
        return True
    if isinstance(exc, OSError):
        code = exc.errno
        if code is None and isinstance(exc.__cause__ or exc.__context__, OSError):
            code = (exc.__cause__ or exc.__context__).errno  # type: ignore[union-attr]
        return code in NO_LINES
    return False


def run_sequence(
    port: Any,
    sequence: str | list[Step],
    *,
    label: str = "reset",
    warn: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Play `sequence` on an open pyserial port; False when the port has no control lines.

    `warn` hears one sentence the first time a given port turns out to have no lines.
    """
    steps = parse_sequence(sequence) if isinstance(sequence, str) else sequence
    if not steps:
        return True
    name = str(getattr(port, "port", None) or getattr(port, "name", None) or port)
    for step in steps:
        try:
            if step.op == "W":
                sleep(step.seconds)
            elif step.op == "D":
                port.dtr = step.dtr
            elif step.op == "R":
                port.rts = step.rts
            else:
                _set_both(port, bool(step.dtr), bool(step.rts))
        except Exception as exc:  # noqa: BLE001 - sorted below: no lines, or a real failure
            if not _no_lines(exc):
                raise
            if warn is not None and name not in _warned:
                _warned.add(name)
                warn(f"{name} has no modem control lines (DTR/RTS): {label} sequence skipped")
            return False
    return True
