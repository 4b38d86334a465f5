"""Shared fixtures: the emulator as a subprocess behind a PTY, the CLI as a user runs it, images."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from uartupdate.emulator.profile import Profile, load_profile

#: Seconds the emulator may take to print its PORT line before the test fails.
START_TIMEOUT = 15.0
#: Seconds the emulator may take to exit after SIGTERM.
STOP_TIMEOUT = 10.0


class EmulatorProcess:
    """`uartupdate emulate --flash FILE` in a subprocess; start() may be called again after stop()."""

    def __init__(self, flash_path: Path, workdir: Path) -> None:
        self.flash_path = flash_path
        self.workdir = workdir
        self.profile: Profile = load_profile()
        self.port: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> str:
        assert not self.running, "the emulator is already running"
        self._runs += 1
        self.stdout_path = self.workdir / f"emulator-{self._runs}.out"
        self.stderr_path = self.workdir / f"emulator-{self._runs}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uartupdate", "emulate", "--flash", str(self.flash_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self.stdout_path.read_text("utf-8", errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                break
            if self.proc.poll() is not None:
                pytest.fail(f"the emulator exited with {self.proc.returncode} before printing its port: "
                            f"{self.stderr_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the emulator printed no PORT line within {START_TIMEOUT} s")
            time.sleep(0.01)
        assert first.startswith("PORT "), f"first stdout line of the emulator is {first!r}"
        self.port = first.split(" ", 1)[1].strip()
        assert self.port.startswith("/dev/"), self.port
        return self.port

    def stop(self) -> None:
        """SIGTERM, wait, and require exit status 0 (the emulator saves its flash on the way out)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"the emulator did not exit within {STOP_TIMEOUT} s of SIGTERM")
        assert proc.returncode == 0, (
            f"the emulator exited with {proc.returncode}: {self.stderr_path.read_text(errors='replace')}"
        )

    def restart(self) -> str:
        self.stop()
        return self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def emulator(tmp_path: Path):
    emu = EmulatorProcess(tmp_path / "flash.bin", tmp_path)
    emu.start()
    try:
        yield emu
    finally:
        try:
            emu.stop()
        finally:
            emu.kill()


def _run_cli(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uartupdate", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli(*args, input=None, timeout=60): `python -m uartupdate ARGS`, text CompletedProcess."""
    return _run_cli


@pytest.fixture
def image(tmp_path: Path) -> Callable[..., Path]:
    """image(size, name=None, seed=None) -> path of a file holding `size` random bytes."""
    counter = iter(range(1_000_000))

    def make(size: int, name: str | None = None, seed: int | None = None) -> Path:
        data = random.Random(seed).randbytes(size) if seed is not None else os.urandom(size)
        path = tmp_path / (name or f"image-{next(counter)}.bin")
        path.write_bytes(data)
        return path

    return make
