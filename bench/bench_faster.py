"""Faster than the wire: deflate, incremental updates and baud switching, over a paced PTY.

Each row runs `uartupdate emulate --baud B --latency-ms 2` in a subprocess (a real PTY
paced at B/10 bytes per second each way) and updates `firmware` from this process:

    .venv/bin/python bench/bench_faster.py
    .venv/bin/python bench/bench_faster.py --baud 921600 --image tests/data/microbit-micropython-1.0.1.hex

"x line" is image bytes per second over the line rate (baud/10) of the rate the host
connected at: above 1 means the update beat the wire.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.image import Image, open_image

MICROPYTHON = Path(__file__).resolve().parent.parent / "tests" / "data" / "microbit-micropython-1.0.1.hex"


def start_emulator(tmp: str, baud: int) -> EmulatorProcess:
    emu = EmulatorProcess(Path(tmp, "flash.bin"), baud=baud, latency_ms=2, workdir=tmp)
    emu.start()
    return emu


def timed_update(port: str, image: Image, connect: int, goal: int, **kwargs: Any) -> dict[str, float]:
    cpu0 = time.process_time()
    start = time.monotonic()
    with Client(port, baud=connect, timeout=10) as dev:
        if goal != connect:
            assert dev.switch_baud(goal), f"the device did not take {goal} baud"
        result = dev.update("firmware", image, kwargs.pop("version"), **kwargs)
    seconds = time.monotonic() - start  # connect, switch and update, as a user waits for them
    return {
        "seconds": seconds,
        "h2d": result.wire_bytes_out,
        "x_line": image.size / seconds / (connect / 10),
        "cpu_per_mib": (time.process_time() - cpu0) / (image.size / (1 << 20)),
    }


def row(name: str, image: Image, connect: int, goal: int, r: dict[str, float]) -> None:
    rate = f"{connect}" if goal == connect else f"{connect}->{goal}"
    print(f"{name:<34} {image.size:>9} {rate:>15} {r['h2d']:>10} {r['seconds']:>8.2f} {r['x_line']:>7.2f} "
          f"{r['cpu_per_mib']:>8.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baud", type=int, default=921600, help="line rate of the emulator (default 921600)")
    parser.add_argument("--image", default=str(MICROPYTHON), help="a real firmware image (.bin or .hex)")
    args = parser.parse_args()
    baud = args.baud
    firmware = open_image(args.image, section_size=1 << 20)
    raw = Path(firmware.path).read_bytes()
    ratio = len(zlib.compress(raw, 9)) / len(raw)
    print(f"{Path(args.image).name}: {len(raw)} bytes, zlib-9 ratio {ratio:.3f} "
          f"(target: x line >= {0.95 / ratio:.2f} at {baud} baud); 2 ms one-way latency")
    print(f"{'case':<34} {'image B':>9} {'baud':>15} {'host->dev':>10} {'seconds':>8} {'x line':>7} {'CPU s/MiB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        emu = start_emulator(tmp, baud)
        try:
            row("real firmware, plain", firmware, baud, baud,
                timed_update(emu.port, firmware, baud, baud, version="1", full=True, compress=False))
            row("real firmware, deflate", firmware, baud, baud,
                timed_update(emu.port, firmware, baud, baud, version="2", full=True))
            noise = Path(tmp, "random.bin")
            noise.write_bytes(os.urandom(1 << 20))
            rnd = Image.from_file(noise)
            plain = timed_update(emu.port, rnd, baud, baud, version="3", full=True, compress=False)
            row("random 1 MiB, plain", rnd, baud, baud, plain)
            auto = timed_update(emu.port, rnd, baud, baud, version="4", full=True)
            row("random 1 MiB, deflate if it pays", rnd, baud, baud, auto)
            changed = bytearray(noise.read_bytes())
            for block in range(0, 256, 100):  # 3 of 256 blocks: ~1%
                changed[block * 4096 + 99] ^= 0xFF
            Path(tmp, "changed.bin").write_bytes(changed)
            delta_image = Image.from_file(Path(tmp, "changed.bin"))
            delta = timed_update(emu.port, delta_image, baud, baud, version="5")
            row("1% of 1 MiB changed, incremental", delta_image, baud, baud, delta)
            print(f"  incremental vs full: {delta['h2d'] / plain['h2d']:.2%} of the wire bytes, "
                  f"{plain['seconds'] / delta['seconds']:.0f}x faster; random with deflate allowed: "
                  f"{auto['seconds'] / plain['seconds'] - 1:+.1%} time")
        finally:
            emu.stop()
        for goal in (921600, 3000000):
            emu = start_emulator(tmp, 115200)
            try:
                row("real firmware, switch + deflate", firmware, 115200, goal,
                    timed_update(emu.port, firmware, 115200, goal, version=f"s{goal}", full=True))
            finally:
                emu.stop()


if __name__ == "__main__":
    main()
