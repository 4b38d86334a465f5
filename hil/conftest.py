"""The conformance suite's fixtures, built on the uartupdate pytest plugin (uartupdate/pytest_plugin.py).

One board for the whole session, as on a rig: the board on --port, or an emulator on a
real PTY (the default, so CI runs the suite). `board` knows what the target file says
the board has, and how to cut its power.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.errors import LinkError, UartUpdateError
from uartupdate.host.reset import run_sequence
from uartupdate.host.target import Target, TargetSection
from uartupdate.pytest_plugin import connect, port_of, start_emulator


class Board:
    """The device under test: a Client, what the target says, and power control when it has some."""

    def __init__(self, target: Target, port: str | None, workdir: Path) -> None:
        self.target = target
        self.workdir = workdir
        self.emulator: EmulatorProcess | None = None
        self.port = port
        if port is None:
            self.emulator = start_emulator(target, workdir)
        self.client = self._connect()
        self.rewritten: set[str] = set()
        self._images = 0

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    def _connect(self) -> Client:
        port = self.emulator.port if self.emulator is not None else self.port
        assert port is not None
        return connect(self.target, port)

    def reconnect(self, wait: float = 0.0) -> None:
        """Open the port again (after a power cycle), trying for up to `wait` seconds."""
        self.client.close()
        deadline = time.monotonic() + wait
        while True:
            try:
                self.client = self._connect()
                return
            except LinkError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        try:
            run_sequence(self.client.port, self.target.reset_after, label="reset after")
        finally:
            self.client.close()
        if self.emulator is not None:
            status = self.emulator.stop()
            self.emulator.kill()
            assert status == 0, f"the emulator exited with {status}: {self.emulator.stderr()}"

    # ------------------------------------------------------------ what the board has

    def sections(self) -> list[dict[str, Any]]:
        return self.client.list_sections()

    def versions(self) -> dict[str, str]:
        return {s["section"]: s["version"] for s in self.sections()}

    def flash(self) -> bytes | None:
        """The whole flash, when the board is emulated (a real board's flash is not visible)."""
        return self.emulator.read_flash() if self.emulator is not None else None

    def rewritable(self, need: str = "a section that destructive tests may rewrite") -> TargetSection:
        """A section the target lets tests write (single slot, no signature needed); else skip."""
        sections = self.target.rewritable()
        if not sections:
            pytest.skip(f"target {self.target.name!r} names no {need} (may_rewrite = true)")
        return min(sections, key=lambda s: s.size or 1 << 62)

    def any_writable(self) -> TargetSection:
        """A writable section refusal tests may address (they must not change it)."""
        for s in self.target.rewritable() or [s for s in self.target.sections if s.writable]:
            return s
        names = [s["section"] for s in self.sections() if s["writable"]]
        if not names:
            pytest.skip("the board lists no writable section")
        return TargetSection(names[0], True)

    # ------------------------------------------------------------ images and versions

    def image(self, size: int, seed: int | None = None) -> Path:
        self._images += 1
        path = self.workdir / f"image-{self._images}.bin"
        path.write_bytes(random.Random(seed).randbytes(size) if seed is not None else os.urandom(size))
        return path

    @staticmethod
    def fresh_version() -> str:
        """A semantic version that grows with time: accepted by boards that refuse downgrades."""
        return f"90.{int(time.time())}.{random.randrange(1, 1_000_000)}"

    def image_size(self, section: TargetSection, want: int) -> int:
        return min(want, section.size) if section.size else want

    # ------------------------------------------------------------ power

    def power_cut(self) -> None:
        if self.emulator is not None:
            self.emulator.power_cut()
            return
        if not (self.target.power_off and self.target.power_on):
            pytest.skip(f"target {self.target.name!r} has no [power] off/on commands")
        _shell(self.target.power_off)

    def power_on(self) -> None:
        if self.emulator is not None:
            self.emulator.power_on()
            self.reconnect()
            return
        assert self.target.power_on
        _shell(self.target.power_on)
        time.sleep(self.target.power_settle)
        self.reconnect(wait=10.0)


def _shell(command: str) -> None:
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"power command {command!r} failed with {proc.returncode}: {proc.stderr.strip()}")


def _restore(board: Board) -> None:
    """Write each rewritten section's `restore` image back (real boards: leave them as found)."""
    for name in sorted(board.rewritten):
        section = board.target.section(name)
        if section is not None and section.restore is not None:
            board.client.update(name, str(section.restore))


@pytest.fixture(scope="session")
def board(pytestconfig: pytest.Config, uartupdate_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    port = port_of(pytestconfig, uartupdate_target)
    try:
        b = Board(uartupdate_target, port, tmp_path_factory.mktemp("hil"))
    except UartUpdateError as exc:
        pytest.exit(f"uartupdate: {exc}", returncode=3)
    try:
        yield b
        _restore(b)
    finally:
        b.close()


@pytest.fixture
def target(board: Board) -> Target:
    return board.target
