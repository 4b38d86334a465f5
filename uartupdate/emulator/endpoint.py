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
import time
import tty
from collections import deque
from typing import Callable

from .device import Device
from .faults import LinkFaults

SLICE = 256  # bytes delivered to the device at once on a paced line


class PacedLine:
    """One direction of a serial line: when do bytes put on it arrive at the far end."""

    def __init__(self, baud: int, latency: float) -> None:
        self.byte_time = 10.0 / baud  # start + 8 data + stop bits
        self.latency = latency
        self._free_at = 0.0

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

    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Run until should_stop() is true (checked at least every 100 ms)."""
        os.set_blocking(self.master, False)
        deliveries: deque[tuple[float, bytes]] = deque()
        outputs: deque[tuple[float, bytes]] = deque()
        pending = bytearray()
        device_free_at = 0.0
        while not should_stop():
            now = time.monotonic()
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
