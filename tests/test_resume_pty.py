"""Resume through the CLI over a real, paced PTY: the host killed, then the device killed, mid-transfer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from uartupdate.emulator.profile import load_profile
from uartupdate.host.emuproc import EmulatorProcess

BAUD = "921600"
IMAGE_SIZE = 320 * 1024  # ~3.5 s at 921600 baud


def start_emulator(flash: Path) -> tuple[EmulatorProcess, str]:
    emu = EmulatorProcess(flash, baud=int(BAUD), latency_ms=2, workdir=flash.parent)
    return emu, emu.start()


def update_cmd(port: str, image: Path) -> list[str]:
    return [sys.executable, "-m", "uartupdate", "update", "--port", port, "--baud", BAUD,
            "--section", "firmware", "--version", "9.9", "--json", str(image)]


def firmware_bytes(flash: Path, size: int) -> bytes:
    offset = load_profile().section("firmware").offset  # type: ignore[union-attr]
    with open(flash, "rb") as f:
        f.seek(offset)
        return f.read(size)


def kill_after(proc: subprocess.Popen[str], seconds: float) -> None:
    time.sleep(seconds)
    assert proc.poll() is None, "the transfer ended before it could be interrupted"
    proc.kill()
    proc.wait(10)


def test_host_killed_mid_transfer_then_same_update_resumes(tmp_path: Path) -> None:
    flash, image = tmp_path / "flash.bin", tmp_path / "fw.bin"
    image.write_bytes(os.urandom(IMAGE_SIZE))
    emu, port = start_emulator(flash)
    try:
        host = subprocess.Popen(update_cmd(port, image), stdout=subprocess.PIPE, text=True)
        kill_after(host, 1.5)
        done = subprocess.run(update_cmd(port, image), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert 0 < result["resumed_from"] < IMAGE_SIZE
        assert result["wire_bytes_out"] < IMAGE_SIZE  # only the rest crossed the wire
    finally:
        assert emu.stop() == 0
    assert firmware_bytes(flash, IMAGE_SIZE) == image.read_bytes()


def test_device_killed_mid_transfer_resumes_after_power_up(tmp_path: Path) -> None:
    flash, image = tmp_path / "flash.bin", tmp_path / "fw.bin"
    image.write_bytes(os.urandom(IMAGE_SIZE))
    emu, port = start_emulator(flash)
    before = firmware_bytes(flash, IMAGE_SIZE)
    host = subprocess.Popen(update_cmd(port, image), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert host.poll() is None, "the transfer ended before it could be interrupted"
        emu.power_cut()  # the board loses power mid-transfer
        _, err = host.communicate(timeout=30)
        assert host.returncode == 3, err  # a link error, not a traceback
        assert err.count("\n") == 1 and "Traceback" not in err
    finally:
        host.kill()
    assert firmware_bytes(flash, IMAGE_SIZE) == before  # the running image is untouched

    emu, port = start_emulator(flash)  # power up on the same flash
    try:
        done = subprocess.run(update_cmd(port, image), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["resumed_from"] > 0
        listing = subprocess.run(
            [sys.executable, "-m", "uartupdate", "list", "--port", port, "--baud", BAUD, "--json"], capture_output=True, text=True
        )
        assert {"section": "firmware", "version": "9.9", "writable": True} in json.loads(listing.stdout)
    finally:
        assert emu.stop() == 0
    assert firmware_bytes(flash, IMAGE_SIZE) == image.read_bytes()
