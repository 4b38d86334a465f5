"""pyserial URL handler `emu://`: an emulated device inside this process.

    emu://                      default profile, flash in memory
    emu://?profile=P&flash=F    a profile file and a flash file
    emu://?ber=1e-5&drop-rate=1e-4&seed=7&flash=F
                                the same over a bad line (uartupdate/emulator/faults.py):
                                ber, drop-rate, garbage-rate, garbage-len, stall-every (bytes),
                                stall-ms, unplug-every (bytes), unplug-ms, seed

On a clean line the device answers synchronously inside write() and read() hands
the answer back. With faults, bytes cross the line as FaultConfig says; a stall holds
them back in both directions for its duration, and an unplug makes the port vanish:
from then on read() and write() raise SerialException as pyserial does for an
unplugged USB adapter, until the port is closed (a new emu:// port with the same
flash file is the board after the cable is back, powered up again).
"""

from __future__ import annotations

import time
import urllib.parse
from collections import deque

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from . import make_device
from .faults import FaultConfig, LinkFaults
from .profile import ProfileError


class Serial(SerialBase):
    def open(self) -> None:
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self._port).query)
        try:
            config = FaultConfig.from_query(query)
        except ValueError as exc:
            raise SerialException(f"bad fault setting in {self._port}: {exc}") from None
        try:
            self.device = make_device(query.get("profile", [None])[0], query.get("flash", [None])[0])
        except (ProfileError, OSError, ValueError) as exc:
            raise SerialException(f"cannot start the emulator: {exc}") from None
        self._rx = bytearray()
        #: The bad line, or None for a perfect one (then nothing below is used).
        self.faults: LinkFaults | None = LinkFaults(config) if config.active else None
        self._to_device: deque[tuple[float, bytes]] = deque()  # on the line, not yet at the device
        self._to_host: deque[tuple[float, bytes]] = deque()  # on the line, not yet at the host
        self._vanished = False
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.device.flash.close()
        self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        pass

    # ------------------------------------------------------------ the bad line

    def _pump(self, now: float) -> None:
        """Move whatever has crossed the line by `now`: to the device, and its answers back."""
        assert self.faults is not None
        while self._to_device and self._to_device[0][0] <= now:
            reply = self.device.receive(self._to_device.popleft()[1])
            if reply:
                self._to_host.extend(self.faults.device_to_host(reply, now))
        while self._to_host and self._to_host[0][0] <= now:
            self._rx += self._to_host.popleft()[1]

    def _check_plugged(self) -> None:
        if self._vanished:
            raise SerialException(
                "device reports readiness to read but returned no data (device disconnected: the emulated cable was unplugged)"
            )

    def _next_arrival(self) -> float | None:
        heads = [q[0][0] for q in (self._to_device, self._to_host) if q]
        return min(heads) if heads else None

    # ------------------------------------------------------------ SerialBase

    @property
    def in_waiting(self) -> int:
        if self.faults is not None and self.is_open:
            self._check_plugged()
            self._pump(time.monotonic())
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        if self.faults is not None:
            self._check_plugged()
            self._pump(time.monotonic())
            if not self._rx and self._timeout:
                due = self._next_arrival()
                wait = self._timeout if due is None else min(self._timeout, max(0.0, due - time.monotonic()))
                time.sleep(wait)
                self._pump(time.monotonic())
        elif not self._rx and self._timeout:
            time.sleep(self._timeout)  # nothing will come: the device only speaks when spoken to
        data = bytes(self._rx[:size])
        del self._rx[:size]
        return data

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        if self.faults is None:
            self._rx += self.device.receive(bytes(data))
            return len(data)
        self._check_plugged()
        now = time.monotonic()
        unplugs = self.faults.unplugs
        self._to_device.extend(self.faults.host_to_device(bytes(data), now))
        self._pump(now)
        if self.faults.unplugs != unplugs:
            self._vanished = True  # the bytes before the pull went out; the port is gone
            self._to_device.clear()
            self._to_host.clear()
        return len(data)

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def reset_output_buffer(self) -> None:
        pass
