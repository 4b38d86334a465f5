"""Shared fixtures: the emulator as a subprocess behind a PTY, the CLI as a user runs it, images."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from uartupdate.emulator.profile import Profile, load_profile
from uartupdate.host.emuproc import EmulatorProcess as SharedEmulatorProcess
from uartupdate.host.errors import LinkError

class EmulatorProcess(SharedEmulatorProcess):
    """The rig's emulator subprocess (uartupdate.host.emuproc), strict as a test wants it:
    a failed start fails the test, and stop() requires exit status 0 (the flash is saved)."""

    def __init__(self, flash_path: Path, workdir: Path) -> None:
        super().__init__(flash_path, workdir=workdir)
        self.profile: Profile = load_profile()

    def start(self) -> str:
        try:
            return super().start()
        except LinkError as exc:
            pytest.fail(str(exc))

    def stop(self) -> int:
        code = super().stop()
        assert code == 0, f"the emulator exited with {code}: {self.stderr()}"
        return code


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
