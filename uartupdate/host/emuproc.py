"""`uartupdate emulate` in a subprocess, with the handles a test rig needs.

    emu = EmulatorProcess(flash="board.flash")   # start() prints nothing; emu.port is the PTY
    emu.start()
    emu.power_cut()          # SIGKILL: the board loses power wherever it is (flash keeps what it had)
    emu.power_on()           # a new process on the same flash file (a new PTY path: see emu.port)
    emu.freeze(); emu.thaw() # SIGSTOP / SIGCONT: a board that hangs, then goes on
    emu.noise(b"...")        # bytes written onto the line towards the device
    emu.stop()               # SIGTERM, exit status 0 required

Used by the pytest plugin (uartupdate_emulator), the HIL suite and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import LinkError

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class EmulatorProcess:
    def __init__(
        self,
        flash: str | os.PathLike[str] | None = None,
        *,
        profile: str | os.PathLike[str] | None = None,
        baud: int | None = None,
        latency_ms: float = 0.0,
        extra_args: list[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="uartupdate-emu-"))
        self.flash_path = Path(flash) if flash else self.workdir / "flash.bin"
        self.profile_path = Path(profile) if profile else None
        self.baud = baud
        self.latency_ms = latency_ms
        self.extra_args = list(extra_args or [])
        self.port: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.frozen = False

    # ------------------------------------------------------------ life cycle

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "uartupdate", "emulate", "--flash", str(self.flash_path)]
        if self.profile_path:
            cmd += ["--profile", str(self.profile_path)]
        if self.baud:
            cmd += ["--baud", str(self.baud), "--latency-ms", str(self.latency_ms)]
        return cmd + self.extra_args

    def start(self) -> str:
        """Start the emulator; the PTY path it serves (also in self.port)."""
        if self.running:
            raise RuntimeError("the emulator is already running")
        self.starts += 1
        out_path = self.workdir / f"emulator-{self.starts}.out"
        self.stderr_path = self.workdir / f"emulator-{self.starts}.err"
        with open(out_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = out_path.read_text("utf-8", errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                break
            if self.proc.poll() is not None:
                raise LinkError(f"the emulator exited with {self.proc.returncode}: {self.stderr().strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise LinkError(f"the emulator printed no PORT line within {START_TIMEOUT:g} s")
            time.sleep(0.01)
        if not first.startswith("PORT "):
            self.kill()
            raise LinkError(f"the emulator's first line is {first!r}, not PORT <path>")
        self.port = first.split(" ", 1)[1].strip()
        self.frozen = False
        return self.port

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def stop(self) -> int:
        """SIGTERM and wait; the exit status (0 when the emulator shut down cleanly)."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            if self.frozen:
                proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return -signal.SIGKILL
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    # ------------------------------------------------------------ faults

    def power_cut(self) -> None:
        """The board loses power now: SIGKILL, wherever the emulator was (mid-erase included)."""
        self.kill()

    def power_on(self) -> str:
        """Power up on the same flash file (a fresh process: transfers in RAM are gone)."""
        return self.start()

    def power_cycle(self, off_seconds: float = 0.0) -> str:
        self.power_cut()
        time.sleep(off_seconds)
        return self.power_on()

    def freeze(self) -> None:
        """The board stops answering (SIGSTOP) until thaw(); bytes sent meanwhile wait in the PTY."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.frozen = False

    def noise(self, data: bytes) -> None:
        """Write `data` onto the line towards the device (as line noise from the host side)."""
        if not self.port:
            raise RuntimeError("the emulator is not running")
        fd = os.open(self.port, os.O_WRONLY | os.O_NOCTTY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    # ------------------------------------------------------------ flash

    def read_flash(self, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of the flash file (the emulator maps it shared: this is what the board holds now)."""
        with open(self.flash_path, "rb") as f:
            f.seek(offset)
            return f.read() if length is None else f.read(length)

    def __enter__(self) -> EmulatorProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()
