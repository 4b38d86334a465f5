"""pytest plugin: a device under test for any project's tests, real or emulated.

Registered through the `pytest11` entry point, so installing uartupdate is enough:

    def test_firmware_section(uartupdate_device):          # a connected Client
        names = [s["section"] for s in uartupdate_device.list_sections()]
        assert "firmware" in names

    pytest                                   # each test gets a fresh emulator on a real PTY
    pytest --port /dev/ttyUSB0               # the board on that port (one connection per session)
    pytest --port 0403:6001 --target board.toml

Options (`--uartupdate-port` and `--uartupdate-target` always; the short `--port` and
`--target` too unless pytest-embedded, which owns those names, is installed):

    --port PORT      device path, pyserial URL, or a USB match (VID:PID, serial number)
    --target FILE    target file (TOML, schema in hil/README.md): baud, sections, reset, power

Fixtures:

    uartupdate_target     the Target (from --target, or the emulator's default profile)
    uartupdate_emulator   a running EmulatorProcess: .port, .flash_path, .read_flash(),
                          .power_cut(), .power_on(), .freeze(), .thaw(), .noise(bytes)
    uartupdate_device     a Client: on --port, or on a fresh uartupdate_emulator

Markers: `destructive` (writes images to sections) and `power` (cuts the board's power).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from .host.client import Client
from .host.emuproc import EmulatorProcess
from .host.errors import UartUpdateError
from .host.ports import resolve_port
from .host.reset import run_sequence
from .host.target import Target, load_target, target_from_profile

GROUP = "uartupdate"


def _aliases_free() -> bool:
    """May the plugin take the short --port/--target? Not when pytest-embedded defines them."""
    if os.environ.get("UARTUPDATE_PYTEST_SHORT_OPTIONS", "1") == "0":
        return False
    from importlib import metadata

    for dist in ("pytest-embedded", "pytest-embedded-serial"):
        try:
            metadata.distribution(dist)
            return False
        except metadata.PackageNotFoundError:
            continue
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "uartupdate: device under test (real board or emulator)")
    short = _aliases_free()
    group.addoption(
        "--uartupdate-port", *(["--port"] if short else []), dest="uartupdate_port", default=None,
        help="serial port of the board under test (path, pyserial URL, VID:PID or serial number); "
             "default: an emulator on a pseudo-terminal",
    )
    group.addoption(
        "--uartupdate-target", *(["--target"] if short else []), dest="uartupdate_target", default=None,
        help="target file (TOML) describing the board: baud, sections, reset and power control",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "destructive: writes images to the board's sections (deselect with -m 'not destructive')")
    config.addinivalue_line("markers", "power: cuts and restores the board's power (needs [power] in the target file)")


def _fail(msg: str) -> None:
    raise pytest.UsageError(msg)


def target_of(config: pytest.Config) -> Target:
    """The Target of this run: --target, else the built-in emulator's default profile."""
    path = config.getoption("uartupdate_target")
    if path:
        try:
            return load_target(path)
        except UartUpdateError as exc:
            _fail(str(exc))
    from .emulator.profile import load_profile

    return target_from_profile(load_profile())


def port_of(config: pytest.Config, target: Target) -> str | None:
    """The board's port (--port, else the target's `port`); None: run against an emulator."""
    port = config.getoption("uartupdate_port") or target.port
    if port is None and target.path is not None and not target.emulator:
        _fail(f"target {target.path} names no port and has no [emulator] table: give --port")
    return port


def connect(target: Target, port: str) -> Client:
    """A Client on `port` with the target's link settings; its reset-before sequence played."""
    client = Client(resolve_port(port), baud=target.baud, timeout=target.timeout, retries=target.retries,
                    dst=target.address, key=target.key())
    try:
        if run_sequence(client.port, target.reset_before, label="reset before", warn=_warn):
            if target.reset_before != "no-reset":
                client.port.reset_input_buffer()
    except BaseException:
        client.close()
        raise
    return client


def _warn(text: str) -> None:
    import warnings

    warnings.warn(text, stacklevel=2)


def start_emulator(target: Target, workdir: Path) -> EmulatorProcess:
    """An emulator for `target` (its profile; paced at its baud when the target asks) in `workdir`."""
    emu = EmulatorProcess(
        workdir / "flash.bin",
        profile=target.emulator_profile,
        baud=target.baud if target.emulator_pace else None,
        workdir=workdir,
    )
    emu.start()
    return emu


@pytest.fixture(scope="session")
def uartupdate_target(pytestconfig: pytest.Config) -> Target:
    """The Target of this run (--target, or the emulator's default profile)."""
    return target_of(pytestconfig)


@pytest.fixture
def uartupdate_emulator(uartupdate_target: Target, tmp_path: Path) -> Iterator[EmulatorProcess]:
    """A fresh emulator on a real PTY for this test; stopped (exit 0 required) after it."""
    target = uartupdate_target if uartupdate_target.emulator else target_from_profile(_default_profile())
    emu = start_emulator(target, tmp_path)
    try:
        yield emu
    finally:
        frozen = emu.frozen
        status = emu.stop()
        emu.kill()
    if emu.starts and status not in (0, None) and not frozen:
        pytest.fail(f"the emulator exited with {status}: {emu.stderr().strip()}")


def _default_profile() -> Any:
    from .emulator.profile import load_profile

    return load_profile()


@pytest.fixture(scope="session")
def _uartupdate_board(pytestconfig: pytest.Config, uartupdate_target: Target) -> Iterator[Client | None]:
    """One connection to the real board for the whole session (opening a port may reset a board)."""
    port = port_of(pytestconfig, uartupdate_target)
    if port is None:
        yield None
        return
    try:
        client = connect(uartupdate_target, port)
    except UartUpdateError as exc:
        pytest.exit(f"uartupdate: {exc}", returncode=3)
    try:
        yield client
        run_sequence(client.port, uartupdate_target.reset_after, label="reset after", warn=_warn)
    finally:
        client.close()


@pytest.fixture
def uartupdate_device(request: pytest.FixtureRequest, _uartupdate_board: Client | None,
                      uartupdate_target: Target) -> Iterator[Client]:
    """A connected Client: the board on --port, or a fresh emulator when no port is given."""
    if _uartupdate_board is not None:
        yield _uartupdate_board
        return
    emu: EmulatorProcess = request.getfixturevalue("uartupdate_emulator")
    target = uartupdate_target if uartupdate_target.emulator else target_from_profile(_default_profile())
    with Client(emu.port, baud=target.baud, timeout=target.timeout, retries=target.retries, dst=target.address,
                key=target.key()) as client:
        yield client
