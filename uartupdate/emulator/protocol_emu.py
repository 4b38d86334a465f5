"""pyserial URL handler `emu://`: an emulated device inside this process.

    emu://                      default profile, flash in memory
    emu://?profile=P&flash=F    a profile file and a flash file

The device answers synchronously inside write(); read() hands the answer back.
"""

from __future__ import annotations

import time
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from . import make_device
from .profile import ProfileError


class Serial(SerialBase):
    def open(self) -> None:
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self._port).query)
        try:
            self.device = make_device(query.get("profile", [None])[0], query.get("flash", [None])[0])
        except (ProfileError, OSError, ValueError) as exc:
            raise SerialException(f"cannot start the emulator: {exc}") from None
        self._rx = bytearray()
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.device.flash.close()
        self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        if not self._rx and self._timeout:
            time.sleep(self._timeout)  # nothing will come: the device only speaks when spoken to
        data = bytes(self._rx[:size])
        del self._rx[:size]
        return data

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        self._rx += self.device.receive(bytes(data))
        return len(data)

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def reset_output_buffer(self) -> None:
        pass
