"""Throughput, wire efficiency and CPU of a streamed update over a paced PTY.

Runs `uartupdate emulate --baud B --latency-ms L` in a subprocess (a real PTY, the
line paced at B/10 bytes per second each way) and updates `firmware` with a random
1 MiB image from this process, then prints one row per baud rate:

    .venv/bin/python bench/bench_transfer.py                 # 115200, 921600, 3000000 baud
    .venv/bin/python bench/bench_transfer.py --baud 921600 --size 262144
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.image import Image


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run(baud: int, latency_ms: float, size: int, profile: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp, "image.bin")
        image_path.write_bytes(os.urandom(size))
        emu = EmulatorProcess(Path(tmp, "flash.bin"), profile=profile, baud=baud, latency_ms=latency_ms, workdir=tmp)
        try:
            with Client(emu.start(), baud=baud, timeout=10) as client:
                image = Image.from_file(image_path)
                cpu0 = time.process_time()
                result = client.update("firmware", image, "bench")
                cpu = time.process_time() - cpu0
            emu_rss = peak_rss_kib(emu.proc.pid)  # type: ignore[union-attr]
        finally:
            emu.stop()
    line_rate = baud / 10
    return {
        "baud": baud,
        "image": size,
        "h2d": result.wire_bytes_out,
        "d2h": result.wire_bytes_in,
        "efficiency": size / result.wire_bytes_out,
        "seconds": result.seconds,
        "of_line": size / result.seconds / line_rate,
        "cpu_per_mib": cpu / (size / (1 << 20)),
        "host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "emu_rss_mib": emu_rss / 1024,
        "resent": result.stats.resent_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baud", type=int, action="append", help="baud rate (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=1 << 20, help="image bytes (default 1 MiB)")
    parser.add_argument("--profile", help="device profile for the emulator")
    args = parser.parse_args()
    bauds = args.baud or [115200, 921600, 3000000]
    header = (f"{'baud':>8} {'image B':>9} {'host->dev B':>11} {'dev->host B':>11} {'efficiency':>10} "
              f"{'seconds':>8} {'of baud/10':>10} {'host CPU s/MiB':>14} {'host RSS MiB':>12} {'emu RSS MiB':>11}")
    print(f"streamed update, {args.latency_ms:g} ms one-way latency, random image")
    print(header)
    for baud in bauds:
        r = run(baud, args.latency_ms, args.size, args.profile)
        print(f"{r['baud']:>8} {r['image']:>9} {r['h2d']:>11} {r['d2h']:>11} {r['efficiency']:>10.4f} "
              f"{r['seconds']:>8.2f} {r['of_line']:>10.3f} {r['cpu_per_mib']:>14.3f} {r['host_rss_mib']:>12.1f} "
              f"{r['emu_rss_mib']:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
