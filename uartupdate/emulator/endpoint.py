"""The emulated device behind a real pseudo-terminal, optionally paced like a UART.

The host opens the PTY's slave path with pyserial exactly as it opens a USB-serial
adapter. With a baud rate set, bytes cross in each direction at baud/10 bytes per
second (8N1) plus a one-way latency, and the device's flash busy time (from the
profile) delays its answers while bytes keep arriving, as on a board with a UART
FIFO and double-buffered chunk reception.
"""

from __future__ import annotations

import os
import select
import time
import tty
from collections import deque
from typing import Callable

from .device import Device

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
    def __init__(self, device: Device, baud: int | None = None, latency: float = 0.0) -> None:
        self.device = device
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.rx = PacedLine(baud, latency) if baud else None  # host -> device
        self.tx = PacedLine(baud, latency) if baud else None  # device -> host
        self.bytes_in = 0
        self.bytes_out = 0

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

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
                if reply:
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
            if self.rx is None:
                deliveries.append((now, data))
            else:
                for i in range(0, len(data), SLICE):
                    piece = data[i : i + SLICE]
                    deliveries.append((self.rx.arrival(now, len(piece)), piece))
