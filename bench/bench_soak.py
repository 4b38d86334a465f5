"""Soak: many back-to-back updates through a noisy simulated link, as a HIL rig runs them.

Each update writes a new random image to `firmware` through a new port (a new process on a
real rig), checks the flash against the image, and counts what the line cost. A failed
update is run again (the next one resumes it) and counted by cause; wrong bytes in flash
are counted too and must stay 0. Throughput is compared with the same updates on a clean
link.

    .venv/bin/python bench/bench_soak.py                                  # 200 x 64 KiB, emu://
    .venv/bin/python bench/bench_soak.py --ber 1e-4 --drop-rate 1e-3      # a very bad cable
    .venv/bin/python bench/bench_soak.py --pty --baud 921600 --updates 50 # a paced PTY emulator

emu:// runs the device in this process (the line is as fast as the CPU); --pty runs
`uartupdate emulate` with the same faults behind a real pseudo-terminal paced at --baud.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from uartupdate.emulator.profile import load_profile
from uartupdate.host.client import Client
from uartupdate.host.errors import DeviceError, LinkError, LinkTimeout, UartUpdateError

FW = load_profile().section("firmware")


@dataclass
class Tally:
    runs: int = 0
    ok: int = 0
    wrong_bytes: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)
    resumed: int = 0
    retransmissions: int = 0
    naks: int = 0
    timeouts: int = 0
    request_retries: int = 0
    crc_host: int = 0
    crc_device: int = 0
    wire_out: int = 0
    payload: int = 0
    seconds: float = 0.0
    smallest_chunk: int = 0


def cause(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, DeviceError):
        return f"device refused ({exc.status})"
    if "not frames" in text:
        return "garbage on the line"
    if "went away" in text:
        return "port went away"
    if isinstance(exc, LinkTimeout):
        if "no answer to Update" in text or "no answer to SWUpdate.Update" in text:
            return "no answer to Update (request or READY lost)"
        if "acknowledgement" in text or "stalled" in text:
            return "transfer stalled"
        words = text.split("no answer to ", 1)[-1].split()
        return f"no answer to {words[0]}" if words else "no answer to a command"
    if isinstance(exc, LinkError):
        return "link error"
    return type(exc).__name__


def run(args: argparse.Namespace, noisy: bool, updates: int, tmp: Path) -> Tally:
    tally = Tally()
    flash = tmp / ("noisy.flash" if noisy else "clean.flash")
    faults = {"ber": args.ber, "drop-rate": args.drop_rate, "garbage-rate": args.garbage_rate} if noisy else {}
    rng = random.Random(args.seed)
    emu = None
    try:
        if args.pty:
            cmd = [sys.executable, "-m", "uartupdate", "emulate", "--flash", str(flash), "--baud", str(args.baud),
                   "--latency-ms", "1", "--seed", str(args.seed)]
            for name, value in faults.items():
                cmd += [f"--{name}", str(value)]
            emu = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            port_path = emu.stdout.readline().split()[1]  # type: ignore[union-attr]
        image = rng.randbytes(args.size)
        version = 0
        attempt = 0
        while tally.ok < updates and tally.runs < 3 * updates:
            tally.runs += 1
            attempt += 1
            path = tmp / "image.bin"
            path.write_bytes(image)
            if args.pty:
                port = port_path
            else:
                port = "emu://?" + urllib.parse.urlencode({"flash": str(flash), **faults, "seed": args.seed * 100_003 + tally.runs})
            started = time.monotonic()
            try:
                with Client(port, baud=args.baud, timeout=args.timeout, retries=args.retries) as client:
                    result = client.update("firmware", str(path), f"1.0.{version}",
                                           **({"full": True, "compress": False} if args.full else {}))
            except UartUpdateError as exc:
                tally.failures[cause(exc)] += 1
                if args.verbose:
                    print(f"run {tally.runs}: {exc}", file=sys.stderr)
                continue  # the same image again: it resumes
            finally:
                tally.seconds += time.monotonic() - started
            with open(flash, "rb") as f:
                f.seek(FW.offset)  # type: ignore[union-attr]
                if f.read(args.size) != image:
                    tally.wrong_bytes += 1
            tally.ok += 1
            tally.resumed += attempt > 1
            d = result.as_dict()
            tally.retransmissions += d["retransmissions"]
            tally.naks += d["naks"]
            tally.timeouts += d["timeouts"]
            tally.request_retries += d["request_retries"]
            tally.crc_host += d["crc_errors"]
            tally.crc_device += d["device_crc_errors"] or 0
            tally.wire_out += d["wire_bytes_out"]
            tally.payload += args.size
            chunk = d["smallest_chunk"]
            tally.smallest_chunk = min(tally.smallest_chunk or chunk, chunk) if chunk else tally.smallest_chunk
            image, version, attempt = rng.randbytes(args.size), version + 1, 0
    finally:
        if emu is not None:
            emu.send_signal(signal.SIGTERM)
            emu.wait(10)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200, help="successful updates to reach (default 200)")
    parser.add_argument("--clean-updates", type=int, default=20, help="updates on the clean link for the baseline")
    parser.add_argument("--size", type=int, default=64 * 1024, help="image bytes (default 64 KiB)")
    parser.add_argument("--ber", type=float, default=1e-5)
    parser.add_argument("--drop-rate", type=float, default=1e-4)
    parser.add_argument("--garbage-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0, help="the host's --timeout (default 2)")
    parser.add_argument("--retries", type=int, default=2, help="the host's --retries (default 2)")
    parser.add_argument("--pty", action="store_true", help="a paced PTY emulator instead of emu://")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each failure's error line")
    parser.add_argument("--full", action="store_true",
                        help="plain streamed updates: no block digests, no deflate (update --full --no-compress)")
    parser.add_argument("--baud", type=int, default=921600, help="line rate (the PTY's pace; emu:// timers)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clean = run(args, False, args.clean_updates, Path(tmp))
        noisy = run(args, True, args.updates, Path(tmp))

    link = f"PTY at {args.baud} baud" if args.pty else "emu:// (in process)"
    print(f"soak: {args.size // 1024} KiB images to firmware over {link}{', plain' if args.full else ''}; "
          f"noisy link: BER {args.ber:g}, "
          f"drop rate {args.drop_rate:g}, garbage rate {args.garbage_rate:g}, seed {args.seed}")
    rows = [
        ("updates run", clean.runs, noisy.runs),
        ("succeeded", clean.ok, noisy.ok),
        ("failed (then resumed)", sum(clean.failures.values()), sum(noisy.failures.values())),
        ("succeeded on a resume", clean.resumed, noisy.resumed),
        ("wrong bytes in flash", clean.wrong_bytes, noisy.wrong_bytes),
        ("retransmissions", clean.retransmissions, noisy.retransmissions),
        ("  NAKs", clean.naks, noisy.naks),
        ("  timeouts", clean.timeouts, noisy.timeouts),
        ("  request retries", clean.request_retries, noisy.request_retries),
        ("CRC errors at the host", clean.crc_host, noisy.crc_host),
        ("CRC errors at the device", clean.crc_device if not args.pty else "n/a", noisy.crc_device if not args.pty else "n/a"),
        ("smallest chunk used", clean.smallest_chunk, noisy.smallest_chunk),
        ("host->device B per image B", f"{clean.wire_out / max(1, clean.payload):.2f}",
         f"{noisy.wire_out / max(1, noisy.payload):.2f}"),
    ]
    rate_clean = clean.payload / clean.seconds / 1000 if clean.seconds else 0.0
    rate_noisy = noisy.payload / noisy.seconds / 1000 if noisy.seconds else 0.0
    rows.append(("throughput KB/s (all runs)", f"{rate_clean:.1f}", f"{rate_noisy:.1f}"))
    print(f"{'':30} {'clean':>12} {'noisy':>12}")
    for name, a, b in rows:
        print(f"{name:30} {a!s:>12} {b!s:>12}")
    print(f"noisy throughput: {100 * rate_noisy / rate_clean:.0f}% of the clean link" if rate_clean else "")
    if noisy.failures:
        print("failures by cause: " + ", ".join(f"{n} {c}" for c, n in noisy.failures.most_common()))
    if noisy.wrong_bytes or clean.wrong_bytes:
        print("WRONG BYTES IN FLASH", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
