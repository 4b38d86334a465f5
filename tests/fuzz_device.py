"""Fuzz target: the emulated device's whole receive path, bytes in, answers out.

Every input is a list of byte chunks fed to a freshly powered-up device
(`Device.receive`), as a UART would deliver them. For every input:

* the device never raises, and what it sends back is clean frames (no framing error), each
  an ACK, a READY or a JSON response envelope whose answers carry an integer status;
* its receive buffer never holds more than one maximum frame, whatever the input claims;
* the flash is byte for byte unchanged unless the input carried an Update the device
  accepted (a READY, or an Update answered 0); and when an Update with an image this
  target made is answered 0, the section holds exactly that image.

Inputs come from hypothesis: raw bytes, and structured ones (valid, broken and mutated
requests, DATA and ABORT frames, garbage and delimiters) cut into random chunks. CI runs
it for a bounded number of examples (tests/test_fuzz.py); by hand it runs for as long as
you like, and with atheris (not a dependency: `pip install atheris`) coverage-guided:

    .venv/bin/python tests/fuzz_device.py --seconds 3600         # hypothesis, one hour
    .venv/bin/python tests/fuzz_device.py --atheris -- -max_total_time=3600

A failure prints the smallest input hypothesis found; add it to tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from uartupdate.core.envelope import Status
from uartupdate.core.framing import (
    AbortFrame,
    AckFrame,
    DataFrame,
    FrameDecoder,
    FrameError,
    JsonFrame,
    ReadyFrame,
    cobs_decode,
    cobs_encode,
    encode_frame,
    parse_body,
)
from uartupdate.emulator import make_device

ADDRESS = "//api.cesanta.com/device_123"
STATUSES = {int(s) for s in Status}

#: Small images the structured inputs install; the checker knows them by their SHA-256.
IMAGES = {hashlib.sha256(img).hexdigest(): img for img in (b"\x5a" * 3000, bytes(range(256)) * 9, b"fuzz" * 1000)}


@dataclass
class Outcome:
    frames: list[Any] = field(default_factory=list)
    accepted: bool = False  # an Update opened a transfer or was answered 0


def run_device(chunks: list[bytes]) -> Outcome:
    """Feed `chunks` to a fresh device and check every rule of the module's doc."""
    device = make_device()
    try:
        before = device.flash.read(0, device.flash.size)
        decoder = FrameDecoder(max_frame=1 << 20)
        outcome = Outcome()
        updates: dict[Any, tuple[str, str]] = {}  # command id -> (section, sig.v) of each Update seen
        sent = b""
        for chunk in chunks:
            sent += chunk  # a frame may span chunks: look for requests in all that was sent
            for cmd in _commands_in(sent):
                if isinstance(cmd, dict) and str(cmd.get("cmd", "")).endswith("SWUpdate.Update") and cmd.get("id", 0) in range(1000, 1078):
                    args = cmd.get("args") if isinstance(cmd.get("args"), dict) else {}
                    sig = args.get("sig") if isinstance(args.get("sig"), dict) else {}
                    updates[cmd.get("id")] = (str(args.get("section")), str(sig.get("v", "")).lower())
            out = device.receive(chunk)
            assert isinstance(out, bytes)
            assert len(device.decoder._buf) <= device.decoder._max_encoded
            installed: dict[str, tuple[str, dict[str, Any]]] = {}  # section -> its last accepted Update now
            for item in decoder.feed(out):
                assert not isinstance(item, FrameError), f"the device sent a broken frame: {item}"
                assert isinstance(item, (JsonFrame, AckFrame, ReadyFrame)), item
                outcome.frames.append(item)
                if isinstance(item, ReadyFrame):
                    outcome.accepted = True
                if isinstance(item, JsonFrame):
                    installed.update(_check_response(item.payload, updates, outcome, device))
            for section, (digest, answer) in installed.items():  # later ones in one chunk overwrite earlier
                _check_installed(device, section, digest, answer)
        if not outcome.accepted:
            assert device.flash.read(0, device.flash.size) == before, "the flash changed without an accepted Update"
        return outcome
    finally:
        device.flash.close()


def _commands_in(chunk: bytes) -> list[Any]:
    """The commands of the JSON requests whole in `chunk` (what the target itself put there)."""
    found: list[Any] = []
    for piece in chunk.split(b"\x00"):
        try:
            frame = parse_body(cobs_decode(piece))
        except ValueError:
            continue
        if isinstance(frame, JsonFrame):
            try:
                env = json.loads(frame.payload)
            except (ValueError, RecursionError):
                continue
            if isinstance(env, dict) and isinstance(env.get("cmds"), list):
                found += env["cmds"]
    return found


def _check_response(
    payload: bytes, updates: dict[Any, tuple[str, str]], outcome: Outcome, device: Any
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Check an answer's form; the accepted Updates in it: section -> (sig.v, answer)."""
    env = json.loads(payload)  # the device's own text: must be JSON
    assert isinstance(env, dict) and env.get("v") == 1 and env.get("src") == device.address, env
    assert isinstance(env.get("resp"), list) and env["resp"], env
    accepted: dict[str, tuple[str, dict[str, Any]]] = {}
    for answer in env["resp"]:
        assert isinstance(answer.get("id"), int) and answer.get("status") in STATUSES, answer
        assert (answer["status"] == 0) == ("status_msg" not in answer), answer
        if answer["status"] == 0 and answer["id"] in updates:
            outcome.accepted = True
            section, digest = updates[answer["id"]]
            accepted[section] = (digest, answer)
    return accepted


def _check_installed(device: Any, section: str, digest: str, answer: dict[str, Any]) -> None:
    image = IMAGES.get(digest)
    spec = device.profile.section(section)
    result = answer.get("resp") if isinstance(answer.get("resp"), dict) else {}
    if image is not None and spec is not None and not result.get("unchanged"):
        slot = result.get("slot", 0)
        offset = spec.slot_offset(slot) if getattr(spec, "dual_slot", False) else spec.offset
        assert device.flash.read(offset, len(image)) == image, "installed bytes differ from the image"


# ---------------------------------------------------------------- inputs

_json_scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_names = st.sampled_from(
    ["/v1/SWUpdate.ListSections", "SWUpdate.ListSections", "/v1/SWUpdate.Update", "/v1/SWUpdate.Status",
     "/v1/SWUpdate.Confirm", "/v1/Sys.GetInfo", "/v1/Sys.Reboot", "/v1/SWUpdate.BlockDigests", "/v2/Nope", "x"]
)
_ids = st.integers(1, 20) | st.sampled_from([0, -1, 2**53, 2**53 - 1, 1.5, "1", True, None])


@st.composite
def update_args(draw: st.DrawFn) -> dict[str, Any]:
    digest, image = draw(st.sampled_from(sorted(IMAGES.items())))
    args: dict[str, Any] = {"section": draw(st.sampled_from(["config", "firmware", "bootloader", "radio"]))}
    args["sig"] = draw(st.sampled_from([{"alg": "sha256", "v": digest}, {"alg": "sha256", "v": "00" * 32},
                                        {"alg": "md5", "v": digest}, {"alg": "sha256"}]))
    if draw(st.booleans()):
        args["blob"] = draw(st.sampled_from([base64.b64encode(image).decode(), "QQ==", "not base64"]))
    else:
        args["size"] = draw(st.sampled_from([len(image), 0, -5, len(image) + 1, 2**40]))
    if draw(st.booleans()):
        args["version"] = draw(st.sampled_from(["2.0.0", "9.9.9", "", "x" * 40, "1.0.0\u0000"]))
    if draw(st.booleans()):
        args[draw(st.sampled_from(["resume", "force", "encoding", "extra"]))] = draw(json_values)
    return args


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    cmds = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(_names)
        cmd: dict[str, Any] = {"cmd": name, "id": draw(_ids)}
        if name.endswith("Update"):  # ids of their own, so that the checker knows an Update's answer
            cmd["id"] = draw(st.integers(1000, 1005))
            cmd["args"] = draw(update_args())
        elif draw(st.booleans()):
            cmd["args"] = draw(json_values)
        cmds.append(cmd)
    env: dict[str, Any] = {"v": draw(st.sampled_from([1, 1, 1, 2, "1"])), "src": "//fuzz"}
    if draw(st.booleans()):
        env["dst"] = draw(st.sampled_from([ADDRESS, "*", "//other", None]))
    env["cmds"] = cmds
    if draw(st.integers(0, 9)) == 0:
        env[draw(st.sampled_from(["resp", "key", "cmds"]))] = draw(json_values)
    return json.dumps(env).encode()


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return encode_frame(JsonFrame(draw(requests())))
    if kind == 4:
        return encode_frame(JsonFrame(draw(st.binary(max_size=200))))
    if kind == 5:
        digest, image = draw(st.sampled_from(sorted(IMAGES.items())))
        start = draw(st.sampled_from([0, 0, 2048, 1024, 4096, 1 << 31]))
        length = draw(st.sampled_from([2048, 0, 1, 100, 4096]))
        data = image[start : start + length] if start < len(image) else draw(st.binary(max_size=64))
        return encode_frame(DataFrame(draw(st.integers(0, 3)), start, data))
    if kind == 6:
        return encode_frame(AbortFrame(draw(st.integers(0, 3))))
    if kind == 7:  # a valid frame with some bits flipped
        raw = bytearray(encode_frame(JsonFrame(draw(requests()))))
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(raw)
    if kind == 8:  # a body without CRC, or with kinds and headers made up
        return cobs_encode(draw(st.binary(max_size=80))) + b"\x00"
    return draw(st.binary(max_size=64))


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """A structured input: frames, possibly a whole valid streamed update, cut into chunks."""
    parts = draw(st.lists(frames(), max_size=12))
    if draw(st.integers(0, 3)) == 0:  # a whole streamed update, in order, among the rest
        digest, image = draw(st.sampled_from(sorted(IMAGES.items())))
        section = draw(st.sampled_from(["config", "firmware"]))
        env = {"v": 1, "src": "//fuzz", "cmds": [{"cmd": "/v1/SWUpdate.Update", "id": 1077,
                                                  "args": {"section": section, "sig": {"alg": "sha256", "v": digest},
                                                           "size": len(image)}}]}
        whole = [encode_frame(JsonFrame(json.dumps(env).encode()))]
        whole += [encode_frame(DataFrame(1, off, image[off : off + 2048])) for off in range(0, len(image), 2048)]
        at = draw(st.integers(0, len(parts)))
        parts[at:at] = whole
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


raw_streams = st.lists(st.binary(max_size=2048), max_size=6)


# ---------------------------------------------------------------- long runs


def _atheris(argv: list[str]) -> None:
    import atheris  # type: ignore[import-not-found]

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        chunks = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096)) for _ in range(fdp.ConsumeIntInRange(1, 8))]
        run_device(chunks)

    atheris.Setup([sys.argv[0], *argv], one)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided, with atheris; options after --")
    args, rest = parser.parse_known_args()
    if args.atheris:
        _atheris([a for a in rest if a != "--"])
        return
    from hypothesis import HealthCheck, given, settings

    end = time.monotonic() + args.seconds
    count = 0

    def one(chunks: list[bytes]) -> None:
        nonlocal count
        count += 1
        run_device(chunks)

    batch = settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    while time.monotonic() < end:  # batches of fresh random examples until the time is up
        for strategy in (streams(), raw_streams):
            batch(given(strategy)(one))()
        print(f"fuzz_device: {count} inputs so far, no failure", flush=True)
    print(f"fuzz_device: {count} inputs, no failure")


if __name__ == "__main__":
    main()
