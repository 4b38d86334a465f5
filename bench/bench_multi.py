"""Many boards from one host: seconds to update 1 board, then N boards at once.

Starts N `uartupdate emulate --baud B` subprocesses (each a real PTY paced at B/10 bytes
per second each way) and updates `firmware` on all of them with one image, through
uartupdate.host.multi.update_many (one thread per port), exactly as
`uartupdate update --port P1 --port P2 ...` does. Prints one row per board count:

    .venv/bin/python bench/bench_multi.py                       # 1 and 16 boards, 115200 baud, 8 KiB
    .venv/bin/python bench/bench_multi.py --boards 1 4 16 32 --size 32768
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.image import Image
from uartupdate.host.multi import update_many


def run(n: int, baud: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp, "image.bin")
        image_path.write_bytes(os.urandom(size))
        emus = []
        for i in range(n):
            workdir = Path(tmp, f"emu-{i}")
            workdir.mkdir()
            emus.append(EmulatorProcess(workdir / "flash.bin", baud=baud, workdir=workdir))
        threads = [threading.Thread(target=e.start) for e in emus]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            image = Image.from_file(image_path)
            cpu0 = time.process_time()
            t0 = time.monotonic()
            results = update_many([e.port for e in emus], "firmware", image,  # type: ignore[misc]
                                  connect=lambda port: Client(port, baud=baud, timeout=10))
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
        finally:
            for e in emus:
                e.stop()
                e.kill()
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} boards failed: {failed[0].error}")
    slowest = max(r.seconds for r in results)
    return {"boards": n, "wall": wall, "slowest": slowest, "cpu": cpu,
            "per_board": size / slowest / 1000, "aggregate": n * size / wall / 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--size", type=int, default=8 * 1024, help="image bytes (default 8 KiB)")
    args = ap.parse_args()
    line_rate = args.baud / 10 / 1000
    print(f"image {args.size} bytes, {args.baud} baud (line rate {line_rate:.1f} kB/s per board)")
    print(f"{'boards':>6} {'wall s':>8} {'slowest s':>10} {'kB/s/board':>11} {'kB/s total':>11} {'host CPU s':>11}")
    base = None
    for n in args.boards:
        r = run(n, args.baud, args.size)
        base = base or r["wall"]
        print(f"{r['boards']:>6} {r['wall']:>8.2f} {r['slowest']:>10.2f} {r['per_board']:>11.1f} "
              f"{r['aggregate']:>11.1f} {r['cpu']:>11.2f}   ({r['wall'] / base:.2f}x the first row)")


if __name__ == "__main__":
    main()
