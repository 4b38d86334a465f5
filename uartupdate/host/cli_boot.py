"""CLI commands for signed images and the bootloader: keygen, sign, status, confirm, reboot."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..images import signing
from .errors import UsageError
from .image import Image

EXIT_OK = 0


def add_parsers(sub: Any, link_options: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("keygen", help="make a signing key (PEM, readable by openssl and imgtool)")
    p.add_argument("--type", required=True, choices=sorted(signing.KEY_TYPES), help="key type")
    p.add_argument("-o", "--output", required=True, help="private key file; the public key goes to NAME.pub.pem")
    p.add_argument("--json", action="store_true", help="print the files written as JSON")

    p = sub.add_parser("sign", help="write a detached signature (the `sig` object) for an image")
    p.add_argument("--key", required=True, help="private key (PEM)")
    p.add_argument("--section", "-s", required=True, help="the section the image is for (it is signed)")
    p.add_argument("--version", dest="image_version", required=True, help="the image's version (it is signed)")
    p.add_argument("-o", "--output", help="signature file (default: IMAGE.sig)")
    p.add_argument("--json", action="store_true", help="print the signature file's content")
    p.add_argument("image", help="image file")

    for name, text in (
        ("status", "show each section's slots, the running and confirmed image, and pending trial boots"),
        ("reboot", "reboot the device (a pending image is tried, an unconfirmed one reverted)"),
        ("confirm", "keep the image that runs in a section, so it is not reverted"),
    ):
        p = sub.add_parser(name, help=text)
        link_options(p)
        p.add_argument("--json", action="store_true", help="print the device's result as JSON")
        if name == "confirm":
            p.add_argument("--section", "-s", required=True, help="section whose running image to confirm")


def add_update_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="write even if the section already runs this version (a downgrade stays refused)")
    sig = p.add_mutually_exclusive_group()
    sig.add_argument("--key", help="sign the image with this private key (PEM) before sending it")
    sig.add_argument("--sig", help="signature file written by `uartupdate sign`")


def apply_signature(args: argparse.Namespace, image: Image) -> None:
    """Put the `sig` that --key or --sig asks for on `image`; refuse a signature made for something else."""
    if getattr(args, "key", None):
        key = _load_key(args.key)
        version = args.image_version if args.image_version is not None else (image.version or "")
        image.sig = signing.sign(key, args.section, version, image.size, image.sha256)
    elif getattr(args, "sig", None):
        doc = _read_sig_file(args.sig)
        for field, expected in (("section", args.section), ("version", args.image_version),
                                ("sha256", image.sha256.hex()), ("size", image.size)):
            if expected is not None and field in doc and doc[field] != expected:
                raise UsageError(f"{args.sig} was made for {field} {doc[field]!r}, not {expected!r}")
        image.sig = {"alg": doc["alg"], "v": doc["v"]}


def _load_key(path: str) -> signing.PrivateKey:
    try:
        return signing.load_private_key(path)
    except signing.KeyError_ as exc:
        raise UsageError(str(exc)) from None


def _read_sig_file(path: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read signature file {path}: {exc.strerror}") from None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise UsageError(f"{path} is not a signature file (JSON)") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("alg"), str) and isinstance(doc.get("v"), str)):
        raise UsageError(f"{path} is not a signature file: it needs string 'alg' and 'v'")
    return doc


def cmd_keygen(args: argparse.Namespace) -> int:
    key = signing.generate_key(args.type)
    private, public = Path(args.output), Path(args.output).with_suffix(".pub.pem")
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signing.private_pem(key))
        public.write_bytes(signing.public_pem(key))
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    alg = signing.alg_of(key)
    if args.json:
        print(json.dumps({"private_key": str(private), "public_key": str(public), "alg": alg}))
    else:
        print(f"Wrote {args.type} private key {private} and public key {public} (sig.alg {alg}); "
              f"trust it with {{\"file\": \"{public.name}\"}} in the device profile's \"keys\"")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from .image import open_image

    image = open_image(args.image)
    key = _load_key(args.key)
    sig = signing.sign(key, args.section, args.image_version, image.size, image.sha256)
    doc = {**sig, "section": args.section, "version": args.image_version, "size": image.size,
           "sha256": image.sha256.hex()}
    output = Path(args.output or f"{args.image}.sig")
    try:
        output.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    print(json.dumps(doc) if args.json else f"Wrote {sig['alg']} signature of {args.image} to {output}")
    return EXIT_OK


def format_status(sections: list[dict[str, Any]]) -> str:
    rows = [("SECTION", "SLOT", "VERSION", "STATE")]
    for s in sections:
        for slot in s["slots"]:
            state = []
            if slot["slot"] == s["running"]:
                state.append("running")
            if slot["slot"] == s["active"]:
                state.append("confirmed")
            if slot["slot"] == s["pending"]:
                state.append(f"pending ({s['trial_boots_left']} trial boots left)")
            rows.append((s["section"], str(slot["slot"]), slot["version"] or "-", ", ".join(state) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _device_command(cmd: str, render: Callable[[Any], str]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from .cli import _client

        call_args = {"section": args.section} if hasattr(args, "section") else None
        with _client(args) as client:
            result = client.command(cmd, call_args)
        print(json.dumps(result) if args.json else render(result))
        return EXIT_OK

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": cmd_keygen,
    "sign": cmd_sign,
    "status": _device_command("/v1/SWUpdate.Status", format_status),
    "confirm": _device_command(
        "/v1/SWUpdate.Confirm", lambda r: f"Confirmed {r['section']}: slot {r['slot']}, version {r['version']}"
    ),
    "reboot": _device_command("/v1/Sys.Reboot", lambda r: "Rebooted"),
}
