"""The `uartupdate` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..core.envelope import BROADCAST
from .client import DEFAULT_SRC, Client, UpdateResult
from .errors import LinkError, UartUpdateError, UsageError
from .image import open_image

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_LINK = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"uartupdate: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", "-p", default=os.environ.get("UARTUPDATE_PORT"),
                   help="serial device or pyserial URL (/dev/ttyUSB0, COM3, socket://host:port, emu://); "
                        "default $UARTUPDATE_PORT")
    p.add_argument("--baud", "-b", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--retries", type=int, default=2, help="resends of a command that got no answer (default 2)")
    p.add_argument("--src", default=DEFAULT_SRC, help=f"this host's address in envelopes (default {DEFAULT_SRC})")
    p.add_argument("--dst", default=None,
                   help=f"the device's address; default: none (point to point); '{BROADCAST}' for any device")
    p.add_argument("--key-file", help="file holding the device's access key (default: $UARTUPDATE_KEY); "
                                      "never given on the command line, where other users could read it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="uartupdate", description="Update microcontroller software over a UART (SWUpdate service).")
    parser.add_argument("--version", action="version", version=f"uartupdate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("emulate", help="run an emulated device behind a pseudo-terminal")
    p.add_argument("--profile", help="device profile (JSON); default: the built-in 4 MiB board")
    p.add_argument("--flash", help="raw flash image file, created if missing, kept across runs")
    p.add_argument("--baud", type=int, default=None, help="pace the line at this baud rate (8N1); default: unpaced")
    p.add_argument("--latency-ms", type=float, default=0.0, help="one-way latency added to each byte (paced line)")

    p = sub.add_parser("list", help="list the device's sections")
    _link_options(p)
    p.add_argument("--json", action="store_true", help="print exactly the ListSections result array")

    p = sub.add_parser("update", help="write an image to a section")
    _link_options(p)
    p.add_argument("--section", "-s", required=True, help="section to update (see `list`)")
    p.add_argument("--version", dest="image_version", help="version to record for the new image")
    p.add_argument("--inline", action="store_true", help="send the image as a base64 `blob` in one frame")
    p.add_argument("--no-resume", action="store_true", help="start over even if the device holds part of it")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="print one JSON result object")
    p.add_argument("image", help="image file")

    p = sub.add_parser("call", help="send a raw request envelope, print the raw response")
    _link_options(p)
    p.add_argument("envelope", help="request envelope as JSON, or - to read it from stdin")

    p = sub.add_parser("demo", help="start the emulator on a PTY and update it, showing each step")
    p.add_argument("--size", type=int, default=256 * 1024, help="bytes of the demo image (default 256 KiB)")
    p.add_argument("--baud", type=int, default=921600, help="paced line rate of the demo (default 921600)")
    return parser


def access_key(args: argparse.Namespace) -> str | None:
    if args.key_file:
        try:
            return Path(args.key_file).read_text("utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read key file {args.key_file}: {exc.strerror}") from None
    return os.environ.get("UARTUPDATE_KEY") or None


def _client(args: argparse.Namespace) -> Client:
    if not args.port:
        raise UsageError("no port given: use --port PORT (or set UARTUPDATE_PORT)")
    return Client(args.port, baud=args.baud, timeout=args.timeout, retries=args.retries, src=args.src, dst=args.dst,
                  key=access_key(args))


# ---------------------------------------------------------------- list


def format_sections(sections: list[dict[str, Any]]) -> str:
    rows = [("SECTION", "VERSION", "WRITABLE")]
    rows += [(str(s.get("section")), str(s.get("version")), "yes" if s.get("writable") else "no") for s in sections]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sections = client.list_sections()
    print(json.dumps(sections) if args.json else format_sections(sections))
    return EXIT_OK


# ---------------------------------------------------------------- update


def _progress_bar(total: int, enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    if not enabled:
        return (lambda done, size: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr, leave=False)

    def update(done: int, size: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def summary_line(result: UpdateResult, baud: int) -> str:
    rate = result.size / result.seconds if result.seconds > 0 else 0.0
    line = baud / 10
    text = f"Wrote {result.size} bytes to {result.section} in {result.seconds:.1f} s ({rate / 1000:.1f} KB/s"
    text += f", {100 * rate / line:.0f}% of line rate)" if line else ")"
    if result.resumed_from:
        text += f", resumed at byte {result.resumed_from}"
    if result.stats.resent_bytes:
        text += f", {result.stats.resent_bytes} bytes resent"
    return text


def cmd_update(args: argparse.Namespace) -> int:
    image = open_image(args.image)
    with _client(args) as client:
        show = not (args.quiet or args.json) and sys.stderr.isatty()
        progress, done = _progress_bar(image.size, show)
        try:
            result = client.update(
                args.section, image, args.image_version, progress=progress, inline=args.inline, resume=not args.no_resume
            )
        finally:
            done()
    if args.json:
        print(json.dumps({"ok": True, **result.as_dict()}))
    elif not args.quiet:
        print(summary_line(result, args.baud))
    return EXIT_OK


# ---------------------------------------------------------------- call


def cmd_call(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.envelope == "-" else args.envelope
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the envelope is not valid JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise UsageError("the envelope must be a JSON object")
    with _client(args) as client:
        response = client.call_with_blob_url(
            envelope, on_unresolved=lambda why: print(f"uartupdate: note: {why}; sent blob_url as is", file=sys.stderr)
        )
    print(json.dumps(response, separators=(",", ":")))
    statuses = [a.get("status") for a in response.get("resp", []) if isinstance(a, dict)]
    return EXIT_OK if statuses and all(s == 0 for s in statuses) else EXIT_REFUSED


# ---------------------------------------------------------------- emulate


def cmd_emulate(args: argparse.Namespace) -> int:
    from ..emulator import make_device
    from ..emulator.endpoint import PtyEndpoint
    from ..emulator.flash import FlashError
    from ..emulator.profile import ProfileError

    try:
        device = make_device(args.profile, args.flash)
    except (ProfileError, FlashError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot open flash file {args.flash}: {exc.strerror}") from None
    endpoint = PtyEndpoint(device, args.baud, args.latency_ms / 1000)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"PORT {endpoint.path}", flush=True)
    p = device.profile
    line = f"{args.baud} baud, {args.latency_ms:g} ms latency" if args.baud else "unpaced"
    print(
        f"emulating {p.name!r} at {p.address} ({p.flash_size // 1024} KiB flash"
        f"{', file ' + args.flash if args.flash else ', in memory'}), {line}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        endpoint.serve(stop.is_set)
    finally:
        endpoint.close()
        device.flash.close()
    return EXIT_OK


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="uartupdate-demo-") as tmp:
        flash, image = Path(tmp, "flash.bin"), Path(tmp, "firmware-2.0.0.bin")
        image.write_bytes(os.urandom(args.size))
        cmd = [sys.executable, "-m", "uartupdate", "emulate", "--flash", str(flash), "--baud", str(args.baud),
               "--latency-ms", "2"]
        print("$ uartupdate " + " ".join(cmd[3:]), flush=True)
        emu = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            first = emu.stdout.readline() if emu.stdout else ""
            if not first.startswith("PORT "):
                raise LinkError("the emulator did not start")
            port = first.split()[1]
            print(first.strip(), flush=True)
            with Client(port, baud=args.baud) as client:
                print(f"\n$ uartupdate list --port {port}")
                print(format_sections(client.list_sections()))
                print(f"\n$ uartupdate update --port {port} --baud {args.baud} --section firmware --version 2.0.0 {image.name}")
                progress, done = _progress_bar(args.size, sys.stderr.isatty())
                try:
                    result = client.update("firmware", str(image), "2.0.0", progress=progress)
                finally:
                    done()
                print(summary_line(result, args.baud))
                print(f"\n$ uartupdate list --port {port}")
                print(format_sections(client.list_sections()))
        finally:
            emu.send_signal(signal.SIGTERM)
            emu.wait(10)
        from ..emulator.profile import load_profile

        offset = load_profile().section("firmware").offset  # type: ignore[union-attr]
        same = flash.read_bytes()[offset : offset + args.size] == image.read_bytes()
        print(f"\nflash file after the emulator stopped: firmware at 0x{offset:x} "
              f"{'matches' if same else 'DOES NOT match'} the image")
        return EXIT_OK if same else EXIT_REFUSED


COMMANDS = {"emulate": cmd_emulate, "list": cmd_list, "update": cmd_update, "call": cmd_call, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UartUpdateError as exc:
        print(f"uartupdate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("uartupdate: interrupted", file=sys.stderr)
        return 130
