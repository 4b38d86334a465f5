"""The emulated device behind a real pseudo-terminal, optionally paced like a UART.

The host opens the PTY's slave path with pyserial exactly as it opens a USB-serial
adapter. With a baud rate set, bytes cross in each direction at baud/10 bytes per
second (8N1) plus a one-way latency, and the device's flash busy time (from the
profile) delays its answers while bytes keep arriving, as on a board with a UART
FIFO and double-buffered chunk reception.

With `faults` (uartupdate/emulator/faults.py) the line is a bad one: bytes are flipped,
lost or joined by garbage on their way in either direction, and a stall holds everything
back for a while. An unplug is what the host sees when a USB-serial adapter is pulled:
the PTY is hung up (its master closed), so the host's next read or write fails at once,
and bytes sent meanwhile are lost. The device itself keeps running (a board with its own
power supply) and keeps its state. When the cable is back, a new PTY is opened: a PTY's
path cannot outlive its master, so the new one usually has another name, as a replugged
adapter may come back as another ttyUSBn. The new path is announced (`on_reconnect`, a
`PORT <path>` line from `uartupdate emulate`), and `link` keeps a symlink pointing at the
current one, the way udev keeps /dev/serial/by-id/... stable.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from collections import deque
from typing import Callable

from .device import Device
from .faults import LinkFaults

SLICE = 256  # bytes delivered to the device at once on a paced line
BAUD_FALLBACK_SECONDS = 2.0  # no valid frame at a new rate for this long: back to the old one
BAUD_IDLE_SECONDS = 10.0  # no valid frame at all for this long: back to the starting rate
TERMIOS_BAUDS = {
    getattr(termios, f"B{b}"): b
    for b in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000,
              1500000, 2000000, 2500000, 3000000, 3500000, 4000000)
    if hasattr(termios, f"B{b}")
}


class PacedLine:
    """One direction of a serial line: when do bytes put on it arrive at the far end."""

    def __init__(self, baud: int, latency: float) -> None:
        self.byte_time = 10.0 / baud  # start + 8 data + stop bits
        self.latency = latency
        self._free_at = 0.0

    def set_baud(self, baud: int) -> None:
        self.byte_time = 10.0 / baud

    def arrival(self, sent_at: float, length: int) -> float:
        start = max(sent_at, self._free_at)
        self._free_at = start + length * self.byte_time
        return self._free_at + self.latency


class PtyEndpoint:
    def __init__(
        self,
        device: Device,
        baud: int | None = None,
        latency: float = 0.0,
        faults: LinkFaults | None = None,
        link: str | None = None,
        on_reconnect: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        self.faults = faults
        self.link = link
        self.on_reconnect = on_reconnect
        self._open_pty()
        self.rx = PacedLine(baud, latency) if baud else None  # host -> device
        self.tx = PacedLine(baud, latency) if baud else None  # device -> host
        self.baud = baud
        self.initial_baud = baud
        self._last_frames = (0.0, 0)  # (when the device's frame count last grew, that count)
        self._switch: tuple[float, int] | None = None  # (when, baud): Sys.SetBaud once its answer is out
        self._fallback: tuple[float, int, int] | None = None  # (deadline, old baud, frames seen at switch)
        self.bytes_in = 0
        self.bytes_out = 0

    def _open_pty(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)  # atomic: the link always names a live PTY or the last one

    def _close_pty(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self._slave = -1

    def close(self) -> None:
        self._close_pty()
        if self.link:
            try:
                if os.readlink(self.link) == self.path:
                    os.unlink(self.link)
            except OSError:
                pass

    def _unplug(self, should_stop: Callable[[], bool]) -> None:
        """The cable is out: hang the PTY up, wait, and come back on a new one."""
        assert self.faults is not None
        self._close_pty()  # the host's next read or write fails (EIO), as for a vanished adapter
        while not should_stop() and self.faults.unplugged(time.monotonic()):
            time.sleep(min(0.05, max(0.0, self.faults.unplugged_until - time.monotonic())))
        if should_stop():
            return
        self._open_pty()
        os.set_blocking(self.master, False)
        if self.on_reconnect:
            self.on_reconnect(self.path)

    def _set_baud(self, baud: int) -> None:
        self.baud = baud
        for line in (self.rx, self.tx):
            if line is not None:
                line.set_baud(baud)

    def _baud_events(self, now: float) -> None:
        """Switch after a Sys.SetBaud answer; go back if no valid frame comes at the new rate."""
        if self._switch is not None and now >= self._switch[0]:
            old = self.baud
            self._set_baud(self._switch[1])
            self._switch = None
            if old is not None:
                self._fallback = (now + BAUD_FALLBACK_SECONDS, old, self.device.stats["frames"])
        frames_now = self.device.stats["frames"]
        if frames_now != self._last_frames[1]:
            self._last_frames = (now, frames_now)
        elif self.baud != self.initial_baud and now - self._last_frames[0] > BAUD_IDLE_SECONDS:
            self._set_baud(self.initial_baud)  # a host gone quiet reconnects at the starting rate
        if self._fallback is not None:
            deadline, old, frames = self._fallback
            if self.device.stats["frames"] > frames:
                self._fallback = None  # the host speaks the new rate
            elif now >= deadline:
                self._set_baud(old)
                self._fallback = None

    def _garble_if_mismatched(self, data: bytes) -> bytes:
        """Bytes sent at another rate than the line's arrive as garbage, as on a real UART."""
        if self.rx is None or self.baud is None or self._slave < 0:
            return data
        try:
            speed = termios.tcgetattr(self._slave)[4]
        except termios.error:
            return data
        host_baud = TERMIOS_BAUDS.get(speed)
        if host_baud is None or host_baud == self.baud:
            return data
        return bytes(b ^ (r | 1) for b, r in zip(data, os.urandom(len(data))))

    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Run until should_stop() is true (checked at least every 100 ms)."""
        os.set_blocking(self.master, False)
        deliveries: deque[tuple[float, bytes]] = deque()
        outputs: deque[tuple[float, bytes]] = deque()
        pending = bytearray()
        device_free_at = 0.0
        while not should_stop():
            now = time.monotonic()
            self._baud_events(now)
            while deliveries and deliveries[0][0] <= now:
                at, data = deliveries.popleft()
                reply = self.device.receive(data)
                device_free_at = max(at, device_free_at) + self.device.flash.take_busy_seconds()
                if reply and self.faults is not None:
                    for sent, piece in self.faults.device_to_host(reply, device_free_at):
                        outputs.append((self.tx.arrival(sent, len(piece)) if self.tx else sent, piece))
                elif reply:
                    due = self.tx.arrival(device_free_at, len(reply)) if self.tx else device_free_at
                    outputs.append((due, reply))
                if self.device.requested_baud is not None:  # switch once the answer is on the wire
                    self._switch = (outputs[-1][0] if outputs else device_free_at, self.device.requested_baud)
                    self.device.requested_baud = None
            while outputs and outputs[0][0] <= now:
                pending += outputs.popleft()[1]
            if pending:
                try:
                    written = os.write(self.master, pending)
                    self.bytes_out += written
                    del pending[:written]
                except BlockingIOError:
                    pass
            due_times = [q[0][0] for q in (deliveries, outputs) if q]
            wait = min(due_times, default=now + 0.1) - time.monotonic()
            readable, _, _ = select.select(
                [self.master], [self.master] if pending else [], [], min(max(wait, 0.0), 0.1)
            )
            if not readable:
                continue
            try:
                data = os.read(self.master, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # EIO: no process holds the slave open; wait for the next one
                time.sleep(0.05)
                continue
            self.bytes_in += len(data)
            now = time.monotonic()
            data = self._garble_if_mismatched(data)
            pieces = [(now, data)]
            if self.faults is not None:
                unplugs = self.faults.unplugs
                pieces = self.faults.host_to_device(data, now)
                if self.faults.unplugs != unplugs:  # bytes before the pull went out, the rest is lost
                    for at, piece in pieces:
                        deliveries.append((at, piece))
                    while deliveries:  # what reached the device before the pull is served (answers lost)
                        self.device.receive(deliveries.popleft()[1])
                    self.device.flash.take_busy_seconds()
                    outputs.clear()
                    pending.clear()
                    self._unplug(should_stop)
                    continue
            for at, piece in pieces:
                if self.rx is None:
                    deliveries.append((at, piece))
                else:
                    for i in range(0, len(piece), SLICE):
                        part = piece[i : i + SLICE]
                        deliveries.append((max(at, self.rx.arrival(now, len(part))), part))
