"""Memory stays flat: a 64 MiB update through a real PTY grows neither side by more than a few MiB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

MiB = 1 << 20
SECTION = 64 * MiB


def big_profile(path: Path) -> Path:
    profile = {
        "name": "big",
        "address": "big",
        "flash": {"size": 160 * MiB, "sector_size": 64 * 1024, "write_align": 4},
        "link": {"max_frame": 65536, "chunk": 2048, "buffers": 4},
        "metadata": {"offset": 0x10000, "size": 0x20000},
        "staging": {"offset": 80 * MiB, "size": 66 * MiB},
        "sections": [
            {"name": "bootloader", "offset": 0, "size": 0x10000, "writable": False, "version": "1"},
            {"name": "firmware", "offset": 8 * MiB, "size": SECTION, "writable": True, "version": "1"},
        ],
    }
    path.write_text(json.dumps(profile))
    return path


def anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc status")


def run_update(port: str, image: Path) -> int:
    """Run the CLI update in a child; its peak resident set in KiB."""
    child = subprocess.Popen(
        [sys.executable, "-m", "uartupdate", "update", "--port", port, "--section", "firmware", "-q", str(image)],
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""
    return usage.ru_maxrss


@pytest.mark.slow
def test_64_mib_update_keeps_host_and_emulator_memory_flat(tmp_path: Path) -> None:
    profile = big_profile(tmp_path / "big.json")
    emu = subprocess.Popen(
        [sys.executable, "-m", "uartupdate", "emulate", "--profile", str(profile), "--flash", str(tmp_path / "f.bin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = emu.stdout.readline().split()[1]  # type: ignore[union-attr]
        small, big = tmp_path / "small.bin", tmp_path / "big.bin"
        small.write_bytes(os.urandom(64 * 1024))
        with open(big, "wb") as f:
            for _ in range(SECTION // MiB):
                f.write(os.urandom(MiB))

        host_baseline = run_update(port, small)
        emu_baseline = anon_kib(emu.pid)
        peak = [emu_baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], anon_kib(emu.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            host_peak = run_update(port, big)
        finally:
            done.set()
            sampler.join()
    finally:
        emu.send_signal(signal.SIGTERM)
        assert emu.wait(30) == 0

    print(f"host peak RSS {host_baseline} -> {host_peak} KiB, emulator anon RSS {emu_baseline} -> {peak[0]} KiB")
    assert host_peak - host_baseline < 8 * 1024, (host_baseline, host_peak)
    assert peak[0] - emu_baseline < 8 * 1024, (emu_baseline, peak[0])
    with open(tmp_path / "f.bin", "rb") as flash, open(big, "rb") as image:
        flash.seek(8 * MiB)
        for _ in range(SECTION // MiB):
            assert flash.read(MiB) == image.read(MiB)
