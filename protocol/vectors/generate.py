#!/usr/bin/env python3
"""Generate the golden test vectors of protocol/vectors/ from the reference implementation.

    python protocol/vectors/generate.py          # (re)write frames.json, corrupt.json, device.json, transfer.json
    python protocol/vectors/generate.py --check  # exit 1 if the checked-in files differ from what the code gives

Deterministic: no clock, no randomness; images are derived from SHA-256 of a counter.
The vectors are checked in; tests/test_vectors.py holds the code to them (it never calls
this script), so a change of behaviour shows up as a failing test, not as new vectors.
See protocol/vectors/README.md for the file formats.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from uartupdate.core import envelope as env  # noqa: E402
from uartupdate.core import framing as fr  # noqa: E402
from uartupdate.emulator import make_device  # noqa: E402
from uartupdate.emulator.device import Device  # noqa: E402

DEVICE = "//api.cesanta.com/device_123"
USER = "//api.cesanta.com/user_123"
OTHER = "//api.cesanta.com/device_456"

# ---------------------------------------------------------------- helpers


def pattern(n: int, seed: str) -> bytes:
    """n deterministic pseudo-random bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_to_dict(f: fr.Frame) -> dict[str, Any]:
    if isinstance(f, fr.JsonFrame):
        try:
            return {"kind": "JSON", "payload": json.loads(f.payload.decode("utf-8"))}
        except ValueError:
            return {"kind": "JSON", "payload_hex": f.payload.hex()}
    if isinstance(f, fr.DataFrame):
        return {"kind": "DATA", "xfer": f.xfer, "offset": f.offset, "data": f.data.hex()}
    if isinstance(f, fr.AckFrame):
        return {"kind": "ACK", "xfer": f.xfer, "offset": f.offset, "flags": 1 if f.nak else 0}
    if isinstance(f, fr.ReadyFrame):
        return {
            "kind": "READY",
            "xfer": f.xfer,
            "offset": f.offset,
            "chunk": f.chunk,
            "window": f.window,
            "prefix_sha256": f.prefix_sha256.hex(),
        }
    if isinstance(f, fr.AbortFrame):
        return {"kind": "ABORT", "xfer": f.xfer}
    raise TypeError(f)


def body_of(wire: bytes) -> bytes:
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    return fr.cobs_decode(wire[:-1])


def frame_vector(name: str, description: str, frame: fr.Frame, **extra: Any) -> dict[str, Any]:
    wire = fr.encode_frame(frame)
    body = body_of(wire)
    d = frame_to_dict(frame)
    if "payload_text" in extra:
        d["payload_text"] = extra.pop("payload_text")
    v = {
        "name": name,
        "description": description,
        "hex": wire.hex(),
        "body_hex": body.hex(),
        "crc32": body[-4:][::-1].hex(),
        "frame": d,
    }
    v.update(extra)
    return v


def json_frame(obj: Any) -> fr.JsonFrame:
    return fr.JsonFrame(env.dumps(obj))


def request_wire(obj: Any) -> bytes:
    return fr.encode_frame(json_frame(obj))


def decode_all(data: bytes, max_frame: int = fr.DEFAULT_MAX_FRAME) -> list[Any]:
    return fr.FrameDecoder(max_frame).feed(data)


def event_to_dict(e: Any) -> dict[str, Any]:
    if isinstance(e, fr.FrameError):
        return {"error": e.reason.value}
    return {"frame": frame_to_dict(e)}


def device_output(data: bytes) -> list[dict[str, Any]]:
    """What a device sent, as frame dicts (JSON payloads as objects)."""
    out = []
    for f in decode_all(data, 1 << 24):
        assert not isinstance(f, fr.FrameError), f
        out.append(frame_to_dict(f))
    return out


def answers_of(data: bytes) -> list[dict[str, Any]]:
    frames = device_output(data)
    assert all(f["kind"] == "JSON" for f in frames), frames
    return [f["payload"] for f in frames]


def segments(wire: bytes, min_run: int = 64) -> list[dict[str, Any]]:
    """Wire bytes as [{"hex": ..} | {"repeat": "xx", "count": n}], long runs compressed."""
    out: list[dict[str, Any]] = []
    lit = bytearray()
    i = 0
    while i < len(wire):
        j = i
        while j < len(wire) and wire[j] == wire[i]:
            j += 1
        if j - i >= min_run:
            if lit:
                out.append({"hex": lit.hex()})
                lit.clear()
            out.append({"repeat": f"{wire[i]:02x}", "count": j - i})
        else:
            lit += wire[i:j]
        i = j
    if lit:
        out.append({"hex": lit.hex()})
    return out


def wire_field(wire: bytes) -> dict[str, Any]:
    if len(wire) <= 4096:
        return {"hex": wire.hex()}
    return {"segments": segments(wire)}


# ---------------------------------------------------------------- the spec's examples

SPEC_LIST_REQUEST = {
    "v": 1,
    "src": USER,
    "dst": DEVICE,
    "cmds": [{"cmd": "/v1/SWUpdate.ListSections", "id": 123}],
}
SPEC_LIST_RESPONSE = {
    "v": 1,
    "src": DEVICE,
    "dst": USER,
    "resp": [{"id": 123, "status": 0, "resp": [{"section": "firmware", "version": "1234", "writable": True}]}],
}
SPEC_UPDATE_REQUEST = {
    "v": 1,
    "src": USER,
    "dst": DEVICE,
    "cmds": [
        {
            "cmd": "/v1/SWUpdate.Update",
            "id": 123,
            "args": {"blob_url": "https://my.server/fw/123/metadata.json", "section": "firmware", "version": "123"},
        }
    ],
}
SPEC_UPDATE_RESPONSE = {"v": 1, "src": DEVICE, "dst": USER, "resp": [{"id": 123, "status": 0}]}

# The text of the spec's ListSections request code block, byte for byte (2-space indent, blank line at the end).
SPEC_LIST_REQUEST_PRETTY = json.dumps(SPEC_LIST_REQUEST, indent=2) + "\n\n"


def find_body_of_run(run: int) -> fr.DataFrame:
    """A DATA frame whose body (kind .. crc) is exactly `run` non-zero bytes."""
    for n in range(1, 256):
        data = bytes([0x41]) * (run - 1 - 6 - 4 - 1) + bytes([n])
        f = fr.DataFrame(0x0101, 0x01010101, data)
        body = body_of(fr.encode_frame(f))
        if len(body) == run and 0 not in body:
            return f
    raise RuntimeError("no frame found")


def frames_file() -> dict[str, Any]:
    vectors = [
        frame_vector(
            "spec_list_sections_request",
            "The SWUpdate spec's ListSections request, compact JSON (as the reference host sends it).",
            json_frame(SPEC_LIST_REQUEST),
        ),
        frame_vector(
            "spec_list_sections_response",
            "The SWUpdate spec's ListSections response, compact JSON.",
            json_frame(SPEC_LIST_RESPONSE),
        ),
        frame_vector(
            "spec_update_request",
            "The SWUpdate spec's Update request with blob_url, compact JSON. A valid frame; a device "
            "without network refuses it (device.json), the reference host resolves blob_url itself.",
            json_frame(SPEC_UPDATE_REQUEST),
        ),
        frame_vector(
            "spec_update_response",
            "The SWUpdate spec's Update response, compact JSON.",
            json_frame(SPEC_UPDATE_RESPONSE),
        ),
        frame_vector(
            "spec_list_sections_request_pretty",
            "The spec's ListSections request code block byte for byte (indented, blank line at the end): "
            "any valid JSON text is a valid payload, whitespace included.",
            fr.JsonFrame(SPEC_LIST_REQUEST_PRETTY.encode()),
            payload_text=SPEC_LIST_REQUEST_PRETTY,
        ),
        frame_vector(
            "json_utf8_payload",
            "JSON payloads are raw UTF-8; non-ASCII characters are not escaped by the reference encoder.",
            json_frame(
                {
                    "v": 1,
                    "src": "host",
                    "cmds": [
                        {
                            "cmd": "SWUpdate.Update",
                            "id": 7,
                            "args": {"section": "config", "version": "2.0-β", "sig": {"alg": "sha256", "v": sha(b"")}, "blob": ""},
                        }
                    ],
                }
            ),
        ),
        frame_vector(
            "data_small",
            "DATA: xfer 1, offset 0, eight image bytes (two of them 0x00).",
            fr.DataFrame(1, 0, bytes([0x00, 0x11, 0x22, 0x33, 0x00, 0x55, 0x66, 0x77])),
        ),
        frame_vector(
            "data_fields_little_endian",
            "DATA: xfer 0x1234, offset 0x00056789: header bytes 34 12 89 67 05 00.",
            fr.DataFrame(0x1234, 0x56789, b"hello"),
        ),
        frame_vector("data_empty", "DATA with no image bytes (a valid frame; 11 body bytes).", fr.DataFrame(2, 4096, b"")),
        frame_vector(
            "data_all_zero",
            "DATA of 16 zero bytes: COBS turns every 0x00 into a code byte.",
            fr.DataFrame(1, 2048, bytes(16)),
        ),
        frame_vector("ack", "ACK: xfer 1, everything below 2048 received, flags 0.", fr.AckFrame(1, 2048)),
        frame_vector("nak", "NAK (ACK with flags bit 0): xfer 1, a gap after 2048; resend from 2048.", fr.AckFrame(1, 2048, nak=True)),
        frame_vector(
            "ready_fresh",
            "READY: xfer 1, offset 0, chunk 2048, window 8192, prefix_sha256 = SHA-256 of nothing.",
            fr.ReadyFrame(1, 0, 2048, 8192, hashlib.sha256(b"").digest()),
        ),
        frame_vector(
            "ready_resume",
            "READY: xfer 3, resume at offset 4096; prefix_sha256 = SHA-256 of the 4096 staged bytes "
            "(the first 4096 bytes of the image of transfer.json 'abort_then_resume').",
            fr.ReadyFrame(3, 4096, 2048, 8192, hashlib.sha256(pattern(10000, "resume")[:4096]).digest()),
        ),
        frame_vector("abort", "ABORT: xfer 1.", fr.AbortFrame(1)),
        frame_vector("abort_max_xfer", "ABORT: xfer 0xffff.", fr.AbortFrame(0xFFFF)),
    ]
    run254 = find_body_of_run(254)
    v = frame_vector(
        "cobs_run_254_at_end",
        "Body of exactly 254 non-zero bytes: FF and the 254 bytes; a final full block needs no closing code.",
        run254,
    )
    vectors.append(v)
    long_form = bytes.fromhex(v["hex"])[:-1] + b"\x01\x00"  # with a redundant closing 01 code
    assert fr.FrameDecoder().feed(long_form) == [run254]
    vectors.append(
        {
            "name": "cobs_run_254_at_end_long_form",
            "description": "The same frame as 'cobs_run_254_at_end' with a redundant final 01 code (an empty last "
            "block), as some COBS encoders emit it. Receivers must accept both forms; decode only.",
            "hex": long_form.hex(),
            "body_hex": v["body_hex"],
            "crc32": v["crc32"],
            "frame": v["frame"],
            "decode_only": True,
        }
    )
    run255 = find_body_of_run(255)
    vectors.append(frame_vector("cobs_run_255", "Body of 255 non-zero bytes: FF + 254 bytes, then 02 + 1 byte.", run255))
    vectors.append(
        frame_vector(
            "cobs_long_run",
            "DATA of 600 non-zero bytes: several FF blocks in a row.",
            fr.DataFrame(0x0101, 0x01010101, bytes(range(1, 256)) + bytes(range(1, 256)) + bytes(range(1, 91))),
        )
    )
    vectors.append(
        frame_vector(
            "data_zero_after_254",
            "DATA of 253 non-zero bytes, a 0x00, and more: a zero right after a full block.",
            fr.DataFrame(0x0101, 0x01010101, bytes([0x42]) * 247 + b"\x00" + b"tail"),
        )
    )
    ack_flags = fr.encode_frame(fr.AckFrame(1, 2048, nak=True))
    body = bytes([fr.Kind.ACK]) + (1).to_bytes(2, "little") + (2048).to_bytes(4, "little") + bytes([0x81])
    body += fr.crc32(body).to_bytes(4, "little")
    wire = fr.cobs_encode(body) + b"\x00"
    assert fr.FrameDecoder().feed(wire) == [fr.AckFrame(1, 2048, nak=True)] and wire != ack_flags
    vectors.append(
        {
            "name": "ack_reserved_flag_bits",
            "description": "ACK with flags 0x81: bits 1..7 are reserved, senders write 0, receivers ignore them. "
            "Decodes as a NAK; decode only (an encoder writes 0x01).",
            "hex": wire.hex(),
            "body_hex": body.hex(),
            "crc32": body[-4:][::-1].hex(),
            "frame": {"kind": "ACK", "xfer": 1, "offset": 2048, "flags": 1},
            "decode_only": True,
        }
    )
    return {
        "description": "Frames as they travel on the wire (hex includes the trailing 00 delimiter), the "
        "unstuffed body (kind .. crc32) and what they mean. encode(frame) == hex and decode(hex) == frame, "
        "except decode_only vectors. See README.md.",
        "crc32_check": {"input_ascii": "123456789", "crc32": "cbf43926"},
        "vectors": vectors,
    }


# ---------------------------------------------------------------- corrupt input

TRAILER = fr.AbortFrame(0x0101)  # the frame tests append to prove the decoder resynchronised


def with_crc(body: bytes) -> bytes:
    return body + fr.crc32(body).to_bytes(4, "little")


def raw_frame(body_without_crc: bytes) -> bytes:
    return fr.cobs_encode(with_crc(body_without_crc)) + b"\x00"


def corrupt_file() -> dict[str, Any]:
    list_req = {"v": 1, "src": USER, "cmds": [{"cmd": "/v1/SWUpdate.ListSections", "id": 1}]}
    good = request_wire(list_req)
    good_body = body_of(good)
    flipped = bytearray(good_body)
    flipped[10] ^= 0x01
    crc_bad = fr.cobs_encode(bytes(flipped)) + b"\x00"
    ack2 = fr.encode_frame(fr.AckFrame(2, 4096))
    small_max = 64
    cases: list[tuple[str, str, bytes, int]] = [
        ("crc_mismatch", "A ListSections request with one bit of its payload flipped (valid COBS, wrong CRC-32). "
         "Dropped silently; the host resends after its timeout.", crc_bad, fr.DEFAULT_MAX_FRAME),
        ("crc_bytes_wrong", "A valid ABORT body whose CRC-32 is stored big-endian instead of little-endian.",
         fr.cobs_encode(b"\x05\x01\x00" + fr.crc32(b"\x05\x01\x00").to_bytes(4, "big")) + b"\x00", fr.DEFAULT_MAX_FRAME),
        ("cobs_code_past_end", "A COBS code byte (05) that points past the delimiter.", bytes.fromhex("0511223300"), fr.DEFAULT_MAX_FRAME),
        ("cobs_truncated_frame", "The first half of a valid frame, then a delimiter (a sender reset mid-frame).",
         good[: len(good) // 2] + b"\x00", fr.DEFAULT_MAX_FRAME),
        ("short_empty_body", "COBS 01: a body of zero bytes.", bytes.fromhex("0100"), fr.DEFAULT_MAX_FRAME),
        ("short_four_bytes", "A body of 4 bytes: shorter than kind + CRC-32 (5 bytes).", bytes.fromhex("050102030400"), fr.DEFAULT_MAX_FRAME),
        ("unknown_kind_06", "Kind 0x06 with a correct CRC-32.", raw_frame(b"\x06hello"), fr.DEFAULT_MAX_FRAME),
        ("unknown_kind_00", "Kind 0x00 with a correct CRC-32.", raw_frame(b"\x00\x01\x00"), fr.DEFAULT_MAX_FRAME),
        ("data_header_truncated", "DATA with 5 of its 6 header bytes.", raw_frame(b"\x02\x01\x00\x00\x00\x00"), fr.DEFAULT_MAX_FRAME),
        ("ack_too_long", "ACK with one byte more than its 7 (ACK, READY and ABORT have a fixed size).",
         raw_frame(b"\x03\x01\x00\x00\x08\x00\x00\x00\x00"), fr.DEFAULT_MAX_FRAME),
        ("ack_too_short", "ACK without its flags byte.", raw_frame(b"\x03\x01\x00\x00\x08\x00\x00"), fr.DEFAULT_MAX_FRAME),
        ("ready_truncated", "READY with 31 of the 32 prefix_sha256 bytes.",
         raw_frame(b"\x04" + body_of(fr.encode_frame(fr.ReadyFrame(1, 0, 2048, 8192, bytes(32))))[1:-5]), fr.DEFAULT_MAX_FRAME),
        ("abort_too_long", "ABORT with 3 bytes instead of 2.", raw_frame(b"\x05\x01\x00\x00"), fr.DEFAULT_MAX_FRAME),
        ("json_kind_empty_payload", "A JSON frame with an empty payload is a frame (the device answers 400 at frame level).",
         raw_frame(b"\x01"), fr.DEFAULT_MAX_FRAME),
        ("zeros_between_frames", "A request, three extra delimiters, another frame: empty frames are ignored, "
         "exactly the two frames come out.", good + b"\x00\x00\x00" + ack2, fr.DEFAULT_MAX_FRAME),
        ("leading_delimiter", "A delimiter before a frame (what a sender may send to flush line noise).",
         b"\x00" + good, fr.DEFAULT_MAX_FRAME),
        ("garbage_between_frames", "A request, noise ending in a delimiter, another frame: the two frames and "
         "one error for the noise.", good + bytes.fromhex("deadbeef00") + ack2, fr.DEFAULT_MAX_FRAME),
        ("garbage_glued_to_next_frame", "Noise with no delimiter of its own runs into the next frame, which is "
         "lost (one error); hence a sender may precede a frame with a 00 after noise or silence.",
         good + bytes.fromhex("5555") + ack2, fr.DEFAULT_MAX_FRAME),
        ("garbage_then_delimiter_then_frame", "Noise, a delimiter the sender put before its frame, the frame.",
         bytes.fromhex("5555") + b"\x00" + ack2, fr.DEFAULT_MAX_FRAME),
        ("max_frame_64_exact", "With a maximum frame of 64 bytes: a frame whose body is exactly 64 bytes is accepted.",
         fr.encode_frame(fr.DataFrame(1, 0, bytes(range(1, 54)))), small_max),
        ("max_frame_64_body_over", "With a maximum frame of 64 bytes: a body of 65 bytes (its COBS form fits the "
         "encoded bound, the decoded body does not) is refused at the delimiter.",
         fr.encode_frame(fr.DataFrame(1, 0, bytes(range(1, 55)))), small_max),
        ("max_frame_64_no_delimiter", "With a maximum frame of 64 bytes: 200 bytes without a delimiter. Refused as "
         "soon as more than 64 + 64//254 + 1 = 65 encoded bytes are buffered; the rest is discarded up to the "
         "next delimiter, and exactly one error is reported.", bytes([0x41]) * 200 + b"\x00", small_max),
        ("oversize_stream", "70000 bytes with no delimiter at the default maximum frame (65536). The device answers "
         "status 413 with id 0 as soon as the bound (65536 + 258 + 1 encoded bytes) is passed, then discards "
         "up to the next delimiter.", bytes([0x41]) * 70000 + b"\x00", fr.DEFAULT_MAX_FRAME),
        ("oversize_body", "A frame whose COBS form fits the encoded bound but whose body is 65537 bytes (DATA of "
         "zeros): refused at the delimiter, the device answers 413 id 0.",
         fr.encode_frame(fr.DataFrame(1, 0, bytes(65537 - 11))), fr.DEFAULT_MAX_FRAME),
    ]
    vectors = []
    for name, description, wire, max_frame in cases:
        events = [event_to_dict(e) for e in fr.FrameDecoder(max_frame).feed(wire)]
        v: dict[str, Any] = {"name": name, "description": description, "max_frame": max_frame}
        v.update(wire_field(wire))
        v["events"] = events
        if max_frame == fr.DEFAULT_MAX_FRAME:
            d = make_device()
            v["device_answers"] = answers_of(d.receive(wire))
        vectors.append(v)
    return {
        "description": "Bytes that are not (only) frames, and what a receiver makes of them. 'events' is what a "
        "decoder with the given max_frame reports, in order: a frame, or an error with its reason. "
        "'device_answers' is every JSON envelope a fresh default device sends back (informative status_msg). "
        "After each vector a receiver must decode the next valid frame normally. See README.md.",
        "trailer": frame_to_dict(TRAILER) | {"hex": fr.encode_frame(TRAILER).hex()},
        "vectors": vectors,
    }


# ---------------------------------------------------------------- device answers


def update_args(section: str, image: bytes, **more: Any) -> dict[str, Any]:
    return {"section": section, "sig": {"alg": "sha256", "v": sha(image)}, **more}


def req(*cmds: dict[str, Any], dst: Any = DEVICE, src: Any = USER, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"v": 1}
    if src is not None:
        e["src"] = src
    if dst is not None:
        e["dst"] = dst
    e.update(extra)
    e["cmds"] = list(cmds)
    return e


def cmd(name: str, id: int, args: Any = None) -> dict[str, Any]:
    c: dict[str, Any] = {"cmd": name, "id": id}
    if args is not None:
        c["args"] = args
    return c


LIST = "/v1/SWUpdate.ListSections"
UPDATE = "/v1/SWUpdate.Update"


def nested(depth: int) -> Any:
    v: Any = 0
    for _ in range(depth):
        v = [v]
    return v


def device_file() -> dict[str, Any]:
    small = b"new config\n"
    good_v = sha(small)
    b64 = base64.b64encode(small).decode()
    cases: list[tuple[str, str, Any]] = [
        ("spec_list_sections", "The spec's ListSections request, verbatim.", SPEC_LIST_REQUEST),
        ("list_sections_without_prefix", "cmd without the optional /v1/ prefix.", req(cmd("SWUpdate.ListSections", 5))),
        ("list_sections_no_dst", "No dst: every device answers; the answer's dst is the request's src.",
         req(cmd(LIST, 6), dst=None)),
        ("list_sections_dst_null", "dst null is treated as absent.", req(cmd(LIST, 6), dst=None) | {"dst": None}),
        ("list_sections_broadcast", "dst \"*\" (broadcast) is answered.", req(cmd(LIST, 7), dst="*")),
        ("list_sections_other_dst", "A request for another device: no answer at all.", req(cmd(LIST, 8), dst=OTHER)),
        ("broken_request_other_dst", "A malformed request (v 2, no cmds) for another device: still no answer.",
         {"v": 2, "src": USER, "dst": OTHER}),
        ("list_sections_with_key", "key is accepted and ignored by a device without access control.",
         req(cmd(LIST, 9), key="secret")),
        ("list_sections_empty_args", "args {} is the same as no args.", req(cmd(LIST, 10, {}))),
        ("list_sections_unknown_arg", "ListSections takes no arguments.", req(cmd(LIST, 11, {"all": True}))),
        ("spec_update_blob_url", "The spec's Update request, verbatim: blob_url alone is refused, the device has "
         "no network (the host resolves blob_url and sends size + DATA instead).", SPEC_UPDATE_REQUEST),
        ("update_blob_url_with_sig", "blob_url alone with a sig: still refused.",
         req(cmd(UPDATE, 12, {"blob_url": "https://my.server/fw.bin", "section": "firmware", "sig": {"alg": "sha256", "v": good_v}}))),
        ("unknown_command", "An unknown method.", req(cmd("/v1/SWUpdate.Reboot", 13))),
        ("unknown_service", "An unknown service.", req(cmd("/v1/Shell.Exec", 14))),
        ("other_version_prefix", "Only /v1/ is stripped: /v2/... is an unknown command.", req(cmd("/v2/SWUpdate.ListSections", 15))),
        ("update_unknown_section", "Update of a section the device does not have.",
         req(cmd(UPDATE, 16, update_args("radio", small, blob=b64)))),
        ("update_read_only_section", "Update of the read-only bootloader.",
         req(cmd(UPDATE, 17, update_args("bootloader", small, blob=b64)))),
        ("update_sig_missing", "sig is required.", req(cmd(UPDATE, 18, {"section": "config", "blob": b64}))),
        ("update_section_missing", "section is required.", req(cmd(UPDATE, 19, {"sig": {"alg": "sha256", "v": good_v}, "blob": b64}))),
        ("update_sig_v_missing", "sig needs alg and v.", req(cmd(UPDATE, 20, {"section": "config", "sig": {"alg": "sha256"}, "blob": b64}))),
        ("update_sig_alg_unsupported", "Only sig.alg \"sha256\" is supported.",
         req(cmd(UPDATE, 21, {"section": "config", "sig": {"alg": "md5", "v": hashlib.md5(small).hexdigest()}, "blob": b64}))),
        ("update_sig_v_short", "sig.v must be 64 hex digits (63 here).",
         req(cmd(UPDATE, 22, {"section": "config", "sig": {"alg": "sha256", "v": good_v[:-1]}, "blob": b64}))),
        ("update_sig_v_not_hex", "sig.v must be hex.",
         req(cmd(UPDATE, 23, {"section": "config", "sig": {"alg": "sha256", "v": "z" * 64}, "blob": b64}))),
        ("update_sig_unknown_member", "sig has only alg and v.",
         req(cmd(UPDATE, 24, {"section": "config", "sig": {"alg": "sha256", "v": good_v, "key": "k1"}, "blob": b64}))),
        ("update_unknown_argument", "Unknown arguments are refused.",
         req(cmd(UPDATE, 25, update_args("config", small, blob=b64, forse=True)))),
        ("update_wrong_type", "version must be a string.",
         req(cmd(UPDATE, 26, update_args("config", small, blob=b64, version=2)))),
        ("update_version_too_long", "version is at most 32 bytes of UTF-8 (33 here).",
         req(cmd(UPDATE, 27, update_args("config", small, blob=b64, version="v" * 33)))),
        ("update_blob_and_size", "Exactly one of blob or size.",
         req(cmd(UPDATE, 28, update_args("config", small, blob=b64, size=len(small))))),
        ("update_no_image", "Neither blob nor size (nor blob_url).", req(cmd(UPDATE, 29, update_args("config", small)))),
        ("update_bad_base64_char", "blob with a character outside the standard alphabet.",
         req(cmd(UPDATE, 30, update_args("config", small, blob=b64[:-4] + "bmV*")))),
        ("update_base64_urlsafe", "blob in the URL-safe alphabet (- and _) is refused.",
         req(cmd(UPDATE, 31, update_args("config", b"\xfb\xff", blob=base64.urlsafe_b64encode(b"\xfb\xff").decode())))),
        ("update_base64_no_padding", "blob without its = padding is refused.",
         req(cmd(UPDATE, 32, update_args("config", small, blob=b64.rstrip("="))))),
        ("update_base64_newline", "blob with a line break is refused.",
         req(cmd(UPDATE, 33, update_args("config", small, blob=b64[:4] + "\n" + b64[4:])))),
        ("update_digest_mismatch", "Inline blob whose SHA-256 is not sig.v: 422, flash untouched.",
         req(cmd(UPDATE, 34, update_args("config", b"something else", blob=b64)))),
        ("update_size_too_large", "size one byte larger than the firmware section (1572864 bytes).",
         req(cmd(UPDATE, 35, update_args("firmware", small, size=1572865)))),
        ("update_size_negative", "size must not be negative.", req(cmd(UPDATE, 36, update_args("config", small, size=-1)))),
        ("update_size_not_integer", "size must be an integer (1.5).", req(cmd(UPDATE, 37, update_args("config", small, size=1.5)))),
        ("update_size_boolean", "true is not an integer.", req(cmd(UPDATE, 38, update_args("config", small, size=True)))),
        ("update_inline_ok", "A small image inline: verified, installed, answered 0 (flash changes).",
         req(cmd(UPDATE, 39, update_args("config", small, blob=b64, version="2")))),
        ("update_inline_uppercase_sig", "sig.v is case-insensitive hex.",
         req(cmd(UPDATE, 40, {"section": "config", "sig": {"alg": "sha256", "v": good_v.upper()}, "blob": b64}))),
        ("bad_version_2", "Envelope v 2: status 505 at frame level (id 0).", req(cmd(LIST, 41)) | {"v": 2}),
        ("bad_version_missing", "No v: 505.", {"src": USER, "dst": DEVICE, "cmds": [cmd(LIST, 42)]}),
        ("bad_version_string", "v \"1\" is not 1: 505.", req(cmd(LIST, 43)) | {"v": "1"}),
        ("bad_version_true", "v true is not 1: 505.", req(cmd(LIST, 44)) | {"v": True}),
        ("src_missing", "No src: 400 at frame level, the answer has no dst.", req(cmd(LIST, 45), src=None)),
        ("src_not_string", "src must be a string.", req(cmd(LIST, 46)) | {"src": 5}),
        ("dst_not_string", "dst must be a string (or absent).", req(cmd(LIST, 47)) | {"dst": 5}),
        ("request_with_resp", "A request must not carry resp.", req(cmd(LIST, 48)) | {"resp": []}),
        ("cmds_empty", "cmds must be a non-empty array.", req()),
        ("cmds_missing", "No cmds at all.", {"v": 1, "src": USER, "dst": DEVICE}),
        ("id_missing", "A command without id: the whole frame is refused at frame level (id 0).", req({"cmd": LIST})),
        ("id_zero", "id 0 is reserved for frame-level answers.", req(cmd(LIST, 0))),
        ("id_too_large", "ids are 1 .. 2^53-1; 2^53 is refused.", req(cmd(LIST, 2**53))),
        ("id_largest", "id 2^53-1 is valid.", req(cmd(LIST, 2**53 - 1))),
        ("id_float", "id 1.5 is not an integer.", req({"cmd": LIST, "id": 1.5})),
        ("id_string", "id \"1\" is not an integer.", req({"cmd": LIST, "id": "1"})),
        ("one_bad_id_spoils_frame", "One command without a valid id: the frame is refused as a whole, no command runs.",
         req(cmd(LIST, 50), {"cmd": LIST, "id": -1})),
        ("duplicate_id", "A repeated id in one frame: the first runs, the repeat is answered 400.",
         req(cmd(LIST, 51), cmd("/v1/SWUpdate.Nope", 51))),
        ("cmd_not_string", "cmd must be a string: that command is answered 400.", req({"cmd": 5, "id": 52})),
        ("args_not_object", "args must be an object: that command is answered 400.", req({"cmd": LIST, "id": 53, "args": []})),
        ("args_null", "args null is not an object.", req({"cmd": LIST, "id": 54, "args": None})),
        ("several_commands", "Four commands in one frame, answered in order in one response frame.",
         req(cmd(LIST, 60), cmd("/v1/SWUpdate.Reboot", 61),
             cmd(UPDATE, 62, update_args("radio", small, blob=b64)), cmd("SWUpdate.ListSections", 63))),
        ("several_commands_with_install", "Update then ListSections in one frame: the list shows the new version.",
         req(cmd(UPDATE, 64, update_args("config", small, blob=b64, version="3")), cmd(LIST, 65))),
        ("nesting_at_limit", "A value at depth 32 (the envelope object is depth 0) is accepted; key is ignored.",
         req(cmd(LIST, 66), key=nested(31))),
        ("nesting_over_limit", "A value at depth 33: 400 at frame level.", req(cmd(LIST, 67), key=nested(32))),
    ]
    raw_cases: list[tuple[str, str, bytes]] = [
        ("not_json", "A JSON frame whose payload is not JSON.", b"{\"v\":1,"),
        ("not_utf8", "A JSON frame whose payload is not UTF-8.", b"{\"v\":1,\"src\":\"\xff\"}"),
        ("not_object", "The envelope must be a JSON object.", b"[1,2,3]"),
        ("empty_payload", "An empty JSON payload.", b""),
    ]
    # Words the status_msg of the (first) refusal must contain, where two refusals share a status.
    mentions = {
        "spec_update_blob_url": "blob_url",
        "update_blob_url_with_sig": "blob_url",
        "update_sig_missing": "sig",
        "update_section_missing": "section",
        "update_version_too_long": "version",
        "update_sig_v_short": "sig.v",
        "update_sig_v_not_hex": "sig.v",
        "update_blob_and_size": "blob",
        "update_no_image": "blob",
        "update_bad_base64_char": "base64",
        "update_base64_urlsafe": "base64",
        "update_base64_no_padding": "base64",
        "update_base64_newline": "base64",
        "update_size_negative": "size",
        "nesting_over_limit": "nested",
    }
    vectors = []
    for name, description, obj in cases:
        v = device_vector(name, description, request_wire(obj), obj)
        if name in mentions:
            first = v["answers"][0]["resp"][0]
            assert mentions[name] in first["status_msg"], (name, first)
            v["status_msg_contains"] = mentions[name]
        vectors.append(v)
    for name, description, payload in raw_cases:
        vectors.append(device_vector(name, description, fr.encode_frame(fr.JsonFrame(payload)), None, payload))
    return {
        "description": "Request frames sent to a freshly powered-up device with the default profile "
        "(uartupdate/emulator/profiles/default.json, address " + DEVICE + ") and the envelopes it answers "
        "with ([] = no answer). status_msg is informative. flash_unchanged: the whole flash is byte-for-byte "
        "the same after the request. See README.md.",
        "address": DEVICE,
        "vectors": vectors,
    }


def device_vector(name: str, description: str, wire: bytes, obj: Any, payload: bytes | None = None) -> dict[str, Any]:
    d = make_device()
    before = d.flash.read(0, d.flash.size)
    answers = answers_of(d.receive(wire))
    unchanged = d.flash.read(0, d.flash.size) == before
    v: dict[str, Any] = {"name": name, "description": description}
    if obj is not None:
        v["request"] = obj
    else:
        v["payload_hex"] = payload.hex()  # type: ignore[union-attr]
    v["hex"] = wire.hex()
    v["answers"] = answers
    v["flash_unchanged"] = unchanged
    return v


# ---------------------------------------------------------------- streamed transfers


class Script:
    """Records a conversation with one device: frames sent, frames it answered."""

    def __init__(self, name: str, description: str) -> None:
        self.device: Device = make_device()
        self.steps: list[dict[str, Any]] = []
        self.name = name
        self.description = description

    def send(self, frame: fr.Frame, note: str) -> list[dict[str, Any]]:
        wire = fr.encode_frame(frame)
        out = device_output(self.device.receive(wire))
        step: dict[str, Any] = {"note": note, "send": frame_to_dict(frame)}
        if not isinstance(frame, fr.JsonFrame):
            step["send_hex"] = wire.hex()
        step["expect"] = out
        self.steps.append(step)
        return out

    def request(self, obj: Any, note: str) -> list[dict[str, Any]]:
        return self.send(json_frame(obj), note)

    def reset(self, note: str) -> None:
        """Power cycle: a new device on the same flash."""
        self.device = Device(self.device.profile, self.device.flash)
        self.steps.append({"note": note, "reset": True})

    def check_region(self, offset: int, length: int, expected: bytes, note: str) -> None:
        got = self.device.flash.read(offset, length)
        assert got == expected
        self.steps.append({"note": note, "flash": {"offset": offset, "length": length, "sha256": sha(got)}})

    def check_flash(self, offset: int, image: bytes, note: str) -> None:
        assert self.device.flash.read(offset, len(image)) == image
        self.steps.append({"note": note, "flash": {"offset": offset, "length": len(image), "sha256": sha(image)}})

    def result(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "steps": self.steps}


def chunks(image: bytes, start: int, stop: int, size: int = 2048) -> list[tuple[int, bytes]]:
    return [(o, image[o : min(o + size, stop)]) for o in range(start, stop, size)]


CONFIG_AT = 0x20000
FIRMWARE_AT = 0x40000


def transfer_file() -> dict[str, Any]:
    scripts = []

    image = pattern(5000, "small")
    s = Script("stream_with_gap_and_duplicate", "A 5000-byte image to config in chunks of 2048: a lost chunk "
               "(gap), one NAK per gap, a duplicate re-ACKed, the last ACK then the Update's answer.")
    s.request(req(cmd(LIST, 1)), "ListSections before")
    s.request(req(cmd(UPDATE, 10, update_args("config", image, version="2", size=len(image)))),
              "Update with size: the device opens transfer 1 and sends READY (offset 0, SHA-256 of nothing)")
    s.send(fr.DataFrame(1, 0, image[:2048]), "first chunk, in order")
    s.send(fr.DataFrame(1, 4096, image[4096:]), "third chunk, the second was lost: NAK 2048 (resend from 2048)")
    s.send(fr.DataFrame(1, 4096, image[4096:]), "another out-of-order chunk of the same gap: no second NAK")
    s.send(fr.DataFrame(1, 0, image[:2048]), "a duplicate of the first chunk: ACK 2048 again")
    s.send(fr.DataFrame(1, 2048, image[2048:4096]), "the host resends from 2048")
    s.send(fr.DataFrame(1, 4096, image[4096:]),
           "the last chunk: ACK 5000, then (after verify and install) the Update's answer, status 0")
    s.check_flash(CONFIG_AT, image, "config (offset 0x20000) holds the image")
    s.request(req(cmd(LIST, 2)), "ListSections after: config is version 2")
    scripts.append(s.result())

    image = pattern(10000, "resume")
    s = Script("abort_then_resume", "ABORT keeps the staged bytes; the same Update resumes at the last whole "
               "sector (4096) with the SHA-256 of the staged prefix; stale DATA of the old transfer is ignored.")
    args = update_args("firmware", image, version="9.9", size=len(image))
    s.request(req(cmd(UPDATE, 20, args)), "Update with size: READY xfer 1 offset 0")
    for o, d in chunks(image, 0, 6144):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    s.send(fr.AbortFrame(1), "ABORT: the Update (id 20) is answered 499")
    s.check_region(FIRMWARE_AT, 0x4000, b"\xff" * 0x4000, "the firmware section is untouched (staging only)")
    s.send(fr.DataFrame(1, 6144, image[6144:8192]), "DATA of the aborted transfer: ignored")
    s.request(req(cmd(UPDATE, 21, args)), "the same Update again: READY xfer 2, offset 4096 (one whole sector staged)")
    for o, d in chunks(image, 4096, len(image)):
        s.send(fr.DataFrame(2, o, d), f"chunk at {o}")
    s.check_flash(FIRMWARE_AT, image, "firmware (offset 0x40000) holds the image")
    scripts.append(s.result())

    s = Script("resume_after_reset", "Power is lost mid-transfer; after the reset the same Update resumes at the "
               "last whole sector. Transfer ids restart after a reset.")
    s.request(req(cmd(UPDATE, 30, args)), "Update with size: READY xfer 1 offset 0")
    for o, d in chunks(image, 0, 6144):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    s.reset("power cycle")
    s.request(req(cmd(LIST, 31)), "ListSections: firmware still at its old version")
    s.request(req(cmd(UPDATE, 32, args)), "the same Update: READY offset 4096 with the staged prefix's SHA-256")
    for o, d in chunks(image, 4096, len(image)):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    s.request(req(cmd(LIST, 33)), "ListSections: firmware at 9.9")
    scripts.append(s.result())

    s = Script("resume_false", "\"resume\": false discards what is staged and starts over at 0.")
    s.request(req(cmd(UPDATE, 40, args)), "Update with size: READY xfer 1")
    for o, d in chunks(image, 0, 4096):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    s.send(fr.AbortFrame(1), "ABORT: answered 499")
    s.request(req(cmd(UPDATE, 41, args | {"resume": False})), "Update with resume false: READY xfer 2 offset 0")
    scripts.append(s.result())

    s = Script("repeated_update_while_open", "The host repeats the Update (its answer was lost): the same transfer "
               "goes on in a new stream from the last whole sector, which a fresh READY names.")
    s.request(req(cmd(UPDATE, 50, args)), "Update with size: READY xfer 1 offset 0")
    for o, d in chunks(image, 0, 6144):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    s.request(req(cmd(UPDATE, 50, args)), "the same Update, same id: READY xfer 1 offset 4096 (sector 0 is whole)")
    for o, d in chunks(image, 4096, len(image)):
        s.send(fr.DataFrame(1, o, d), f"chunk at {o}")
    scripts.append(s.result())

    other = pattern(3000, "other")
    s = Script("superseded_by_new_update", "An Update for another image ends the open transfer: its Update is "
               "answered 499 first, then the new transfer's READY.")
    s.request(req(cmd(UPDATE, 60, args)), "Update A: READY xfer 1")
    s.send(fr.DataFrame(1, 0, image[:2048]), "chunk of A")
    s.request(req(cmd(UPDATE, 61, update_args("config", other, size=len(other)))),
              "Update B: answer 499 to id 60, then READY xfer 2 offset 0")
    s.send(fr.AbortFrame(2), "ABORT of B: id 61 answered 499")
    scripts.append(s.result())

    s = Script("streamed_digest_mismatch", "A streamed image whose SHA-256 is not sig.v: last ACK, then 422; "
               "the section is not touched.")
    s.request(req(cmd(UPDATE, 70, update_args("config", b"expected", size=100, version="7"))), "Update: READY")
    s.send(fr.DataFrame(1, 0, pattern(100, "wrong")), "all 100 bytes: ACK 100, then 422")
    s.request(req(cmd(LIST, 71)), "ListSections: config still at version 1")
    s.check_region(CONFIG_AT, 0x10000, b"\xff" * 0x10000, "config is still as it left the factory (erased)")
    scripts.append(s.result())

    image = pattern(3000, "frame")
    s = Script("update_inside_a_frame", "Commands after a streamed Update in the same frame are answered, in "
               "order and in the same response frame, once the transfer has ended.")
    s.request(req(cmd(LIST, 80), cmd(UPDATE, 81, update_args("config", image, version="8", size=len(image))), cmd(LIST, 82)),
              "ListSections, Update, ListSections: only READY comes now")
    s.send(fr.DataFrame(1, 0, image[:2048]), "chunk at 0")
    s.send(fr.DataFrame(1, 2048, image[2048:]), "last chunk: ACK 3000, then one response with ids 80, 81, 82")
    scripts.append(s.result())

    s = Script("inline_update", "Update with an inline base64 blob: answered once installed.")
    image = pattern(300, "inline")
    s.request(req(cmd(UPDATE, 90, update_args("config", image, version="inline-1", blob=base64.b64encode(image).decode()))),
              "Update with blob: status 0")
    s.check_flash(CONFIG_AT, image, "config holds the image")
    s.request(req(cmd(LIST, 91)), "ListSections: config at inline-1")
    scripts.append(s.result())

    return {
        "description": "Conversations with one device (default profile, fresh flash): each step sends one frame "
        "and lists every frame the device sends back, in order. 'reset' is a power cycle (same flash). 'flash' "
        "checks the SHA-256 of flash bytes (profile-specific, informative for other layouts). JSON status_msg "
        "is informative. See README.md.",
        "address": DEVICE,
        "scripts": scripts,
    }


# ---------------------------------------------------------------- main

FILES = {
    "frames.json": frames_file,
    "corrupt.json": corrupt_file,
    "device.json": device_file,
    "transfer.json": transfer_file,
}


def render(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, make in FILES.items():
        text = render(make())
        path = HERE / name
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, "utf-8")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run protocol/vectors/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
