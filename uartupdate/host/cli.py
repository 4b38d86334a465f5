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
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..core.envelope import BROADCAST
from . import cli_boot
from .client import DEFAULT_SRC, Client, UpdateResult
from .errors import DeviceError, LinkError, UartUpdateError, UsageError
from .image import open_image
from .ports import format_ports, list_ports, match_ports, resolve_port
from .reset import check_sequence, run_sequence

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_LINK = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"uartupdate: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _link_options(p: argparse.ArgumentParser, many: bool = False) -> None:
    port_help = ("serial device or pyserial URL (/dev/ttyUSB0, COM3, socket://host:port, emu://), or a USB match: "
                 "VID:PID, serial number, vid=..,pid=..,serial=..; default $UARTUPDATE_PORT")
    if many:
        p.add_argument("--port", "-p", action="append", help=port_help + "; repeat to update several boards at once")
        p.add_argument("--ports-file", help="file naming one port per line (# comments), added to --port")
    else:
        p.add_argument("--port", "-p", default=os.environ.get("UARTUPDATE_PORT"), help=port_help)
    p.add_argument("--before", default="no-reset", type=check_sequence,
                   help="DTR/RTS sequence played after opening the port: no-reset (default), default-reset "
                        "(ESP-style pulse into the bootloader), hard-reset, or steps like 'D0|R1|W0.1|D1|R0'")
    p.add_argument("--after", default="no-reset", type=check_sequence,
                   help="DTR/RTS sequence played when done: no-reset (default), hard-reset, or custom steps")
    p.add_argument("--baud", "-b", type=int, default=115200,
                   help="baud rate (default 115200); with --connect-baud, the rate to switch to")
    p.add_argument("--connect-baud", type=int,
                   help="connect at this (safe) rate, then switch both ends to --baud if the device offers it, "
                        "falling back to this rate if the switch fails")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--retries", type=int, default=2, help="resends of a command that got no answer (default 2)")
    p.add_argument("--src", default=DEFAULT_SRC, help=f"this host's address in envelopes (default {DEFAULT_SRC})")
    p.add_argument("--dst", default=None,
                   help=f"the device's address; default: none (point to point); '{BROADCAST}' for any device")
    p.add_argument("--key-file", help="file holding the device's access key (default: $UARTUPDATE_KEY); "
                                      "never given on the command line, where other users could read it")


def _fault_options(p: argparse.ArgumentParser) -> None:
    """A bad line on purpose (uartupdate/emulator/faults.py); seeded, so a failure can be replayed."""
    g = p.add_argument_group("line faults (seeded: the same --seed hits the same bytes)")
    g.add_argument("--ber", type=float, default=0.0, help="bit-error rate, each direction (e.g. 1e-5)")
    g.add_argument("--drop-rate", type=float, default=0.0, help="probability that a byte is lost (e.g. 1e-4)")
    g.add_argument("--garbage-rate", type=float, default=0.0,
                   help="probability, after each byte, of a burst of random bytes")
    g.add_argument("--garbage-len", type=int, default=32, help="longest garbage burst in bytes (default 32)")
    g.add_argument("--stall-every", type=int, default=0, metavar="BYTES",
                   help="stall the line after every BYTES bytes from the host")
    g.add_argument("--stall-ms", type=float, default=0.0, help="how long a stall lasts: nothing crosses meanwhile")
    g.add_argument("--unplug-every", type=int, default=0, metavar="BYTES",
                   help="pull the cable after every BYTES bytes from the host: the PTY hangs up, the host's "
                        "port fails, and a new PTY comes back (a new PORT line; see --link)")
    g.add_argument("--unplug-ms", type=float, default=0.0, help="how long the cable stays out")
    g.add_argument("--link", metavar="PATH", help="keep a symlink at PATH to the current PTY (stable across unplugs)")
    g.add_argument("--seed", type=int, default=0, help="seed of every fault (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="uartupdate", description="Update microcontroller software over a UART (SWUpdate service).")
    parser.add_argument("--version", action="version", version=f"uartupdate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("emulate", help="run an emulated device behind a pseudo-terminal")
    p.add_argument("--profile", help="device profile (JSON file, or a built-in one: default, ab); "
                                     "default: the built-in 4 MiB board")
    p.add_argument("--flash", help="raw flash image file, created if missing, kept across runs")
    p.add_argument("--baud", type=int, default=None, help="pace the line at this baud rate (8N1); default: unpaced")
    p.add_argument("--latency-ms", type=float, default=0.0, help="one-way latency added to each byte (paced line)")
    _fault_options(p)
    p.add_argument("--power-cut-at", type=int, metavar="N",
                   help="lose power at the N-th flash operation (boot included), then power up from the flash")
    p.add_argument("--power-cut-mode", choices=("torn", "before"), default="torn",
                   help="torn: the operation is cut halfway, leaving random bits; before: it never starts")
    p.add_argument("--power-cut-seed", type=int, default=0, help="seed of the torn bits, to replay a failure")
    p.add_argument("--json", action="store_true",
                   help='first stdout line is a JSON object {"port": PATH, ...} instead of "PORT PATH"')

    p = sub.add_parser("ports", help="list serial ports (device, description, USB VID:PID, serial number)")
    p.add_argument("--match", metavar="FILTER", help="only ports matching VID:PID, a serial number, or key=value pairs")
    p.add_argument("--json", action="store_true", help="print a JSON array of port objects")

    p = sub.add_parser("list", help="list the device's sections")
    _link_options(p)
    p.add_argument("--json", action="store_true", help="print exactly the ListSections result array")

    p = sub.add_parser("update", help="write an image to a section (of one board, or several at once)")
    _link_options(p, many=True)
    p.add_argument("--section", "-s", required=True, help="section to update (see `list`)")
    p.add_argument("--version", dest="image_version", help="version to record for the new image")
    p.add_argument("--inline", action="store_true", help="send the image as a base64 `blob` in one frame")
    p.add_argument("--no-resume", action="store_true", help="start over even if the device holds part of it")
    p.add_argument("--full", action="store_true",
                   help="send every block, even those the device already runs (no incremental update)")
    p.add_argument("--no-compress", action="store_true", help="never deflate the stream")
    p.add_argument("--base", "--address", dest="base", type=_address, metavar="ADDR",
                   help="Intel HEX only: the section's start address (the hex must start there); "
                        "default: the hex's lowest address")
    p.add_argument("--section-size", type=_address, metavar="BYTES",
                   help="Intel HEX only: the section's size; hex data beyond it (e.g. a UICR block) is left out")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="print one JSON result object")
    out.add_argument("--json-progress", action="store_true",
                     help="print JSON Lines: start, progress and done events per board, then a summary object")
    p.add_argument("image", help="image file: raw .bin, Intel HEX or a metadata document (told apart by content)")
    cli_boot.add_update_options(p)

    p = sub.add_parser("call", help="send a raw request envelope, print the raw response")
    _link_options(p)
    p.add_argument("--json", action="store_true", help="accepted for symmetry: the response is always printed as JSON")
    p.add_argument("envelope", help="request envelope as JSON, or - to read it from stdin")

    p = sub.add_parser("demo", help="start the emulator on a PTY and update it, showing each step")
    p.add_argument("--size", type=int, default=256 * 1024, help="bytes of the demo image (default 256 KiB)")
    p.add_argument("--baud", type=int, default=921600, help="paced line rate of the demo (default 921600)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every step's result instead")
    cli_boot.add_parsers(sub, _link_options)
    return parser


def _address(text: str) -> int:
    """argparse `type=`: an address or size, decimal or 0x-hex (k/K, m/M suffixes for KiB, MiB)."""
    t = text.strip().lower()
    scale = {"k": 1024, "m": 1 << 20}.get(t[-1:], 1) if t[-1:] in ("k", "m") and not t.startswith("0x") else 1
    try:
        value = int(t[:-1] if scale > 1 else t, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (decimal, or hex as 0x...)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def access_key(args: argparse.Namespace) -> str | None:
    if args.key_file:
        try:
            return Path(args.key_file).read_text("utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read key file {args.key_file}: {exc.strerror}") from None
    return os.environ.get("UARTUPDATE_KEY") or None


def _client(args: argparse.Namespace, port: str | None = None, key: str | None = None) -> Client:
    """A Client for `port` (default --port, resolved if it is a USB match), --before played on it."""
    port = port or args.port
    if not port:
        raise UsageError("no port given: use --port PORT (or set UARTUPDATE_PORT)")
    start_baud = args.connect_baud or args.baud
    client = Client(resolve_port(port), baud=start_baud, timeout=args.timeout, retries=args.retries, src=args.src,
                    dst=args.dst, key=key if key is not None else access_key(args))
    try:
        _reset(client, args.before, "--before")
        if start_baud != args.baud and not client.switch_baud(args.baud):
            _note(f"{port}: the device did not take {args.baud} baud; staying at {start_baud}")
    except BaseException:
        client.close()
        raise
    return client


_print_lock = threading.Lock()


def _note(text: str) -> None:
    with _print_lock:
        print(f"uartupdate: note: {text}", file=sys.stderr, flush=True)


def _reset(client: Client, sequence: str, label: str) -> None:
    """Play a --before/--after sequence; a port without DTR/RTS is noted once, not an error."""
    try:
        played = run_sequence(client.port, sequence, label=label, warn=_note)
    except (OSError, ValueError) as exc:
        raise LinkError(f"{client.name}: {label} failed: {exc}") from None
    if played and sequence != "no-reset":
        client.port.reset_input_buffer()  # what the board printed while it booted is not an answer


def _json_out(obj: Any) -> None:
    with _print_lock:
        print(json.dumps(obj), flush=True)


# ---------------------------------------------------------------- ports


def cmd_ports(args: argparse.Namespace) -> int:
    found = list_ports()
    if args.match:
        found = match_ports(args.match, found)
    print(json.dumps([p.as_dict() for p in found]) if args.json else format_ports(found))
    return EXIT_OK


# ---------------------------------------------------------------- list


def format_sections(sections: list[dict[str, Any]]) -> str:
    rows = [("SECTION", "VERSION", "WRITABLE")]
    rows += [(str(s.get("section")), str(s.get("version")), "yes" if s.get("writable") else "no") for s in sections]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sections = client.list_sections()
        _reset(client, args.after, "--after")
    print(json.dumps(sections) if args.json else format_sections(sections))
    return EXIT_OK


# ---------------------------------------------------------------- update


def _progress_bar(total: int, enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    if not enabled:
        return (lambda done, size: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr, leave=False)

    def update(done: int, size: int) -> None:
        if bar.total != size:  # a deflated or delta stream is shorter than the image
            bar.total = size
        bar.update(done - bar.n)

    return update, bar.close


def summary_line(result: UpdateResult, baud: int) -> str:
    if result.unchanged:
        return f"{result.section} already runs this version: nothing written (--force would rewrite it)"
    rate = result.size / result.seconds if result.seconds > 0 else 0.0
    line = baud / 10
    text = f"Wrote {result.size} bytes to {result.section} in {result.seconds:.1f} s ({rate / 1000:.1f} KB/s"
    text += f", {100 * rate / line:.0f}% of line rate)" if line else ")"
    if result.resumed_from:
        text += f", resumed at byte {result.resumed_from}"
    if result.stats.resent_bytes:
        text += f", {result.stats.resent_bytes} bytes resent"
    noise = [(result.retransmissions, "retransmissions"), (result.stats.naks, "NAKs"),
             (result.stats.timeouts, "timeouts"), (result.link.crc_errors, "CRC errors")]
    if result.device_errors is not None:
        noise.append((result.device_errors["crc_errors"], "CRC errors at the device"))
    if any(n for n, _ in noise):
        text += " (" + ", ".join(f"{n} {what}" for n, what in noise) + ")"
    if result.pending:
        text += f"; pending in slot {result.device_result['slot']}: reboot to try it, then confirm"  # type: ignore[index]
    return text


def _update_ports(args: argparse.Namespace) -> list[str]:
    ports = list(args.port or [])
    if args.ports_file:
        try:
            text = Path(args.ports_file).read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read ports file {args.ports_file}: {exc.strerror}") from None
        ports += [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]
    if not ports and os.environ.get("UARTUPDATE_PORT"):
        ports = [os.environ["UARTUPDATE_PORT"]]
    if not ports:
        raise UsageError("no port given: use --port PORT (or --ports-file, or set UARTUPDATE_PORT)")
    return ports


def cmd_update(args: argparse.Namespace) -> int:
    ports = _update_ports(args)
    image = open_image(args.image, base=args.base, section_size=args.section_size)
    cli_boot.apply_signature(args, image)
    if image.note and not (args.quiet or args.json or args.json_progress):
        _note(image.note)
    if len(ports) > 1 or args.json_progress:
        return _update_many(args, ports, image)
    with _client(args, ports[0]) as client:
        show = not (args.quiet or args.json) and sys.stderr.isatty()
        progress, done = _progress_bar(image.size, show)
        try:
            result = client.update(
                args.section, image, args.image_version, progress=progress, inline=args.inline, resume=not args.no_resume,
                force=args.force, full=args.full, compress=not args.no_compress,
            )
        finally:
            done()
        _reset(client, args.after, "--after")
    if args.json:
        extra = {"base": image.base} if image.base is not None else {}
        print(json.dumps({"ok": True, **result.as_dict(), **extra}))
    elif not args.quiet:
        print(summary_line(result, args.baud))
    return EXIT_OK


def _update_many(args: argparse.Namespace, ports: list[str], image: Any) -> int:
    """Several boards at once (multi.py): a progress line each, a summary table, the worst exit code."""
    from .multi import JsonProgress, ProgressLines, format_summary, overall_exit, update_many

    key = access_key(args)
    reporter: Any = None
    if args.json_progress:
        reporter = JsonProgress(ports, args.section, image.size, _json_out)
    elif not (args.quiet or args.json) and sys.stderr.isatty():
        reporter = ProgressLines(ports, image.size, sys.stderr)
    try:
        results = update_many(
            ports, args.section, image, connect=lambda port: _client(args, port, key), version=args.image_version,
            inline=args.inline, resume=not args.no_resume, force=getattr(args, "force", False),
            on_progress=reporter.progress if reporter else None, on_done=reporter.done if reporter else None,
            after=lambda client: _reset(client, args.after, "--after"),
        )
    finally:
        if reporter:
            reporter.close()
    code = overall_exit(results)
    boards = [r.as_dict() for r in results]
    if args.json_progress:
        _json_out({"event": "summary", "ok": code == EXIT_OK, "exit": code, "boards": boards})
    elif args.json:
        _json_out({"ok": code == EXIT_OK, "exit": code, "boards": boards})
    else:
        for r in results:
            if not r.ok:
                error = r.error or "failed"
                print(f"uartupdate: {error if r.port in error else f'{r.port}: {error}'}", file=sys.stderr)
        if not args.quiet:
            print(format_summary(results))
    return code


# ---------------------------------------------------------------- call


def cmd_call(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.envelope == "-" else args.envelope
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the envelope is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("the envelope is not valid JSON: nested too deeply") from None
    if not isinstance(envelope, dict):
        raise UsageError("the envelope must be a JSON object")
    with _client(args) as client:
        response = client.call_with_blob_url(
            envelope, on_unresolved=lambda why: print(f"uartupdate: note: {why}; sent blob_url as is", file=sys.stderr)
        )
        _reset(client, args.after, "--after")
    print(json.dumps(response, separators=(",", ":")))
    statuses = [a.get("status") for a in response.get("resp", []) if isinstance(a, dict)]
    return EXIT_OK if statuses and all(s == 0 for s in statuses) else EXIT_REFUSED


# ---------------------------------------------------------------- emulate


def cmd_emulate(args: argparse.Namespace) -> int:
    from ..emulator import make_device
    from ..emulator.endpoint import PtyEndpoint
    from ..emulator.faults import FaultConfig, LinkFaults
    from ..emulator.flash import FlashError, PowerCut
    from ..emulator.profile import ProfileError

    try:
        cut = None
        if args.power_cut_at is not None:
            cut = PowerCut(args.power_cut_at, torn=args.power_cut_mode == "torn", seed=args.power_cut_seed)
        device = make_device(args.profile, args.flash, cut)
    except (ProfileError, FlashError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot open flash file {args.flash}: {exc.strerror}") from None
    try:
        faults = FaultConfig(args.ber, args.drop_rate, args.garbage_rate, args.garbage_len, args.stall_every,
                             args.stall_ms / 1000, args.unplug_every, args.unplug_ms / 1000, args.seed)
    except ValueError as exc:
        device.flash.close()
        raise UsageError(f"bad line fault: {exc}") from None

    def reconnected(path: str) -> None:  # the cable is back: a new PTY
        print(json.dumps({"port": path, "reconnected": True}) if args.json else f"PORT {path}", flush=True)

    endpoint = PtyEndpoint(device, args.baud, args.latency_ms / 1000, LinkFaults(faults) if faults.active else None,
                           args.link, reconnected)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    p = device.profile
    if args.json:
        print(json.dumps({"port": endpoint.path, "profile": p.name, "address": p.address, "flash": args.flash,
                          "baud": args.baud, "pid": os.getpid()}), flush=True)
    else:
        print(f"PORT {endpoint.path}", flush=True)
    line = f"{args.baud} baud, {args.latency_ms:g} ms latency" if args.baud else "unpaced"
    print(
        f"emulating {p.name!r} at {p.address} ({p.flash_size // 1024} KiB flash"
        f"{', file ' + args.flash if args.flash else ', in memory'}), {line}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    if endpoint.faults is not None:
        print(f"line faults: {faults.describe()}", file=sys.stderr, flush=True)
    try:
        endpoint.serve(stop.is_set)
    finally:
        endpoint.close()
        device.flash.close()
        stats = device.stats
        print(f"device: {stats['frames']} frames, {stats['frame_errors']} frame errors "
              f"({stats['crc_errors']} CRC)", file=sys.stderr, flush=True)
        if endpoint.faults is not None:
            print(f"line faults done: {endpoint.faults.summary()}", file=sys.stderr, flush=True)
    return EXIT_OK


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.json:
        return _demo(args, {})
    import contextlib
    import io

    report: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        code = _demo(args, report)
    print(json.dumps({"ok": code == EXIT_OK, "exit": code, **report}))
    return code


def _demo(args: argparse.Namespace, report: dict[str, Any]) -> int:
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
                report["port"], report["before"] = port, client.list_sections()
                print(format_sections(report["before"]))
                print(f"\n$ uartupdate update --port {port} --baud {args.baud} --section firmware --version 2.0.0 {image.name}")
                progress, done = _progress_bar(args.size, sys.stderr.isatty())
                try:
                    result = client.update("firmware", str(image), "2.0.0", progress=progress)
                finally:
                    done()
                report["update"] = result.as_dict()
                print(summary_line(result, args.baud))
                print(f"\n$ uartupdate list --port {port}")
                report["after"] = client.list_sections()
                print(format_sections(report["after"]))
        finally:
            emu.send_signal(signal.SIGTERM)
            emu.wait(10)
        from ..emulator.profile import load_profile

        offset = load_profile().section("firmware").offset  # type: ignore[union-attr]
        same = flash.read_bytes()[offset : offset + args.size] == image.read_bytes()
        report["flash_matches"] = same
        print(f"\nflash file after the emulator stopped: firmware at 0x{offset:x} "
              f"{'matches' if same else 'DOES NOT match'} the image")
        return EXIT_OK if same else EXIT_REFUSED


COMMANDS = {"emulate": cmd_emulate, "list": cmd_list, "update": cmd_update, "call": cmd_call, "demo": cmd_demo,
            "ports": cmd_ports, **cli_boot.COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UartUpdateError as exc:
        print(f"uartupdate: {exc}", file=sys.stderr)
        if getattr(args, "json", False) or getattr(args, "json_progress", False):
            error: dict[str, Any] = {"ok": False, "exit": exc.exit_code, "error": str(exc)}
            if isinstance(exc, DeviceError):
                error["status"] = exc.status
            _json_out({"event": "summary", **error} if getattr(args, "json_progress", False) else error)
        return exc.exit_code
    except KeyboardInterrupt:
        print("uartupdate: interrupted", file=sys.stderr)
        return 130
