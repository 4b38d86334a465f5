"""The golden vectors of protocol/vectors/ hold the implementation to the wire contract.

Every vector is checked in both directions where it has two: what the code encodes equals
the vector's bytes, and what the code decodes from the vector's bytes equals its meaning.
Device vectors run against a freshly powered-up emulator (default profile, flash in memory).
The vectors are data: this file never regenerates them (see protocol/vectors/generate.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from uartupdate.core import envelope as env
from uartupdate.core import framing as fr
from uartupdate.emulator import make_device
from uartupdate.emulator.device import Device

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text("utf-8"))


FRAMES = load("frames.json")
CORRUPT = load("corrupt.json")
DEVICE = load("device.json")
TRANSFER = load("transfer.json")


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


# ---------------------------------------------------------------- vector meaning -> objects


def to_frame(d: dict[str, Any]) -> fr.Frame:
    """A frame object from its vector form (independent of the generator's own conversion)."""
    kind = d["kind"]
    if kind == "JSON":
        if "payload_text" in d:
            return fr.JsonFrame(d["payload_text"].encode("utf-8"))
        if "payload_hex" in d:
            return fr.JsonFrame(bytes.fromhex(d["payload_hex"]))
        return fr.JsonFrame(env.dumps(d["payload"]))
    if kind == "DATA":
        return fr.DataFrame(d["xfer"], d["offset"], bytes.fromhex(d["data"]))
    if kind == "ACK":
        assert d["flags"] in (0, 1), "vectors write the flags an encoder sends"
        return fr.AckFrame(d["xfer"], d["offset"], nak=bool(d["flags"] & 1))
    if kind == "READY":
        return fr.ReadyFrame(d["xfer"], d["offset"], d["chunk"], d["window"], bytes.fromhex(d["prefix_sha256"]))
    if kind == "ABORT":
        return fr.AbortFrame(d["xfer"])
    raise AssertionError(f"unknown kind in a vector: {kind}")


def wire_of(v: dict[str, Any]) -> bytes:
    if "hex" in v:
        return bytes.fromhex(v["hex"])
    out = bytearray()
    for seg in v["segments"]:
        out += bytes.fromhex(seg["hex"]) if "hex" in seg else bytes.fromhex(seg["repeat"]) * seg["count"]
    return bytes(out)


def feed_in_pieces(decoder: fr.FrameDecoder, data: bytes, size: int) -> list[Any]:
    events: list[Any] = []
    for i in range(0, len(data), size):
        events += decoder.feed(data[i : i + size])
    return events


def event_matches(event: Any, expected: dict[str, Any]) -> bool:
    if "error" in expected:
        return isinstance(event, fr.FrameError) and event.reason.value == expected["error"]
    return not isinstance(event, fr.FrameError) and event == to_frame(expected["frame"])


def normalise_answer(answer: dict[str, Any], where: str) -> dict[str, Any]:
    """An answer envelope without the informative status_msg texts, after checking they exist."""
    assert isinstance(answer, dict) and isinstance(answer.get("resp"), list), f"{where}: not a response: {answer!r}"
    out = dict(answer)
    items = []
    for item in answer["resp"]:
        item = dict(item)
        if item["status"] != 0:
            msg = item.pop("status_msg", None)
            assert isinstance(msg, str) and msg.strip(), f"{where}: status {item['status']} without a status_msg"
        else:
            assert "status_msg" not in item, f"{where}: status 0 with a status_msg"
        items.append(item)
    out["resp"] = items
    return out


def device_frames(data: bytes) -> list[fr.Frame]:
    frames = fr.FrameDecoder(1 << 24).feed(data)
    assert not any(isinstance(f, fr.FrameError) for f in frames), f"the device sent a broken frame: {frames}"
    return frames


def assert_output(out: bytes, expected: list[dict[str, Any]], where: str) -> None:
    """The device's bytes are exactly the expected frames (JSON compared without status_msg text)."""
    frames = device_frames(out)
    assert len(frames) == len(expected), f"{where}: expected {len(expected)} frames, got {frames}"
    for got, want in zip(frames, expected):
        if want["kind"] == "JSON":
            assert isinstance(got, fr.JsonFrame), f"{where}: expected a JSON frame, got {got}"
            answer = json.loads(got.payload)
            assert normalise_answer(answer, where) == normalise_answer(want["payload"], where + " (vector)"), where
        else:
            assert got == to_frame(want), f"{where}: {got} != {want}"


def snapshot(device: Device) -> bytes:
    return device.flash.read(0, device.flash.size)


def list_sections_wire(id: int = 4242) -> bytes:
    return fr.encode_frame(
        fr.JsonFrame(env.dumps(env.request("//test", None, [env.command("/v1/SWUpdate.ListSections", id)])))
    )


# ---------------------------------------------------------------- frames.json


def test_crc32_check_value() -> None:
    check = FRAMES["crc32_check"]
    data = check["input_ascii"].encode()
    assert fr.crc32(data) == int(check["crc32"], 16) == zlib.crc32(data)


def test_frame_vectors_cover_the_contract() -> None:
    names = set(ids(FRAMES["vectors"]))
    for required in (
        "spec_list_sections_request",
        "spec_list_sections_response",
        "spec_update_request",
        "spec_update_response",
        "data_small",
        "ack",
        "nak",
        "ready_fresh",
        "abort",
        "data_all_zero",
        "cobs_run_254_at_end",
        "cobs_long_run",
    ):
        assert required in names
    kinds = {v["frame"]["kind"] for v in FRAMES["vectors"]}
    assert kinds == {"JSON", "DATA", "ACK", "READY", "ABORT"}


def test_spec_examples_are_exact() -> None:
    """The four envelopes of the SWUpdate spec, as compact JSON, key order included."""
    by_name = {v["name"]: v for v in FRAMES["vectors"]}
    user, device = "//api.cesanta.com/user_123", "//api.cesanta.com/device_123"
    expected = {
        "spec_list_sections_request": (
            f'{{"v":1,"src":"{user}","dst":"{device}","cmds":[{{"cmd":"/v1/SWUpdate.ListSections","id":123}}]}}'
        ),
        "spec_list_sections_response": (
            f'{{"v":1,"src":"{device}","dst":"{user}","resp":[{{"id":123,"status":0,"resp":'
            '[{"section":"firmware","version":"1234","writable":true}]}]}'
        ),
        "spec_update_request": (
            f'{{"v":1,"src":"{user}","dst":"{device}","cmds":[{{"cmd":"/v1/SWUpdate.Update","id":123,"args":'
            '{"blob_url":"https://my.server/fw/123/metadata.json","section":"firmware","version":"123"}}]}'
        ),
        "spec_update_response": f'{{"v":1,"src":"{device}","dst":"{user}","resp":[{{"id":123,"status":0}}]}}',
    }
    for name, text in expected.items():
        (frame,) = fr.FrameDecoder().feed(bytes.fromhex(by_name[name]["hex"]))
        assert frame == fr.JsonFrame(text.encode()), name


@pytest.mark.parametrize("v", FRAMES["vectors"], ids=ids(FRAMES["vectors"]))
def test_frame_vector(v: dict[str, Any]) -> None:
    wire = bytes.fromhex(v["hex"])
    frame = to_frame(v["frame"])
    body = bytes.fromhex(v["body_hex"])
    # The wire form: COBS, one delimiter at the end and nowhere else.
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert fr.cobs_decode(wire[:-1]) == body
    assert len(wire) - 1 <= fr.cobs_max_encoded(len(body))
    # The body: kind, header, payload, CRC-32 little-endian over everything before it.
    assert body[0] == fr.Kind[v["frame"]["kind"]]
    assert body[-4:] == bytes.fromhex(v["crc32"])[::-1]
    assert int.from_bytes(body[-4:], "little") == fr.crc32(body[:-4]) == zlib.crc32(body[:-4])
    # Decode: in one piece and byte by byte.
    assert fr.FrameDecoder().feed(wire) == [frame]
    assert feed_in_pieces(fr.FrameDecoder(), wire, 1) == [frame]
    assert fr.parse_body(body) == frame
    if v["frame"]["kind"] == "JSON" and "payload" in v["frame"]:
        assert json.loads(frame.payload.decode("utf-8")) == v["frame"]["payload"]  # type: ignore[union-attr]
    # Encode (the reference encoder's exact bytes), unless the vector shows an alternative form.
    if not v.get("decode_only"):
        assert fr.encode_frame(frame) == wire
        assert fr.frame_size(frame) == len(body)
    else:
        assert fr.encode_frame(frame) != wire


def test_all_frames_in_one_stream() -> None:
    """Frames back to back, fed in odd-sized pieces, come out in order."""
    vectors = FRAMES["vectors"]
    stream = b"".join(bytes.fromhex(v["hex"]) for v in vectors)
    expected = [to_frame(v["frame"]) for v in vectors]
    assert fr.FrameDecoder().feed(stream) == expected
    assert feed_in_pieces(fr.FrameDecoder(), stream, 7) == expected


# ---------------------------------------------------------------- corrupt.json


def test_corrupt_vectors_cover_every_reason() -> None:
    reasons = {e["error"] for v in CORRUPT["vectors"] for e in v["events"] if "error" in e}
    assert reasons == {r.value for r in fr.FrameErrorReason}
    assert any(v.get("device_answers") for v in CORRUPT["vectors"] if v["name"].startswith("oversize"))


@pytest.mark.parametrize("v", CORRUPT["vectors"], ids=ids(CORRUPT["vectors"]))
@pytest.mark.parametrize("piece", [None, 1, 61], ids=["whole", "bytewise", "pieces61"])
def test_corrupt_vector_decoder(v: dict[str, Any], piece: int | None) -> None:
    wire = wire_of(v)
    decoder = fr.FrameDecoder(v["max_frame"])
    events = decoder.feed(wire) if piece is None else feed_in_pieces(decoder, wire, piece)
    assert len(events) == len(v["events"]), f"{events} != {v['events']}"
    for got, want in zip(events, v["events"]):
        assert event_matches(got, want), f"{got} != {want}"
    # The decoder is back in step: the next valid frame comes out as it is.
    trailer = CORRUPT["trailer"]
    assert decoder.feed(bytes.fromhex(trailer["hex"])) == [to_frame(trailer)]


@pytest.mark.parametrize(
    "v", [v for v in CORRUPT["vectors"] if "device_answers" in v], ids=ids([v for v in CORRUPT["vectors"] if "device_answers" in v])
)
def test_corrupt_vector_device(v: dict[str, Any]) -> None:
    device = make_device()
    before = snapshot(device)
    out = device.receive(wire_of(v))
    assert_output(out, [{"kind": "JSON", "payload": a} for a in v["device_answers"]], v["name"])
    for a in v["device_answers"]:
        for item in a["resp"]:
            if item["status"] == env.Status.TOO_LARGE:
                assert item["id"] == env.FRAME_ID
    assert snapshot(device) == before
    # And it still serves the next request.
    (answer,) = device_frames(device.receive(list_sections_wire()))
    reply = json.loads(answer.payload)  # type: ignore[union-attr]
    assert [(a["id"], a["status"]) for a in reply["resp"]] == [(4242, 0)]


# ---------------------------------------------------------------- device.json


def test_device_vectors_cover_the_statuses() -> None:
    statuses = {item["status"] for v in DEVICE["vectors"] for a in v["answers"] for item in a["resp"]}
    assert {0, 400, 403, 404, 413, 415, 422, 501, 505} <= statuses
    assert any(v["answers"] == [] for v in DEVICE["vectors"])
    assert any(len(v["answers"][0]["resp"]) > 2 for v in DEVICE["vectors"] if v["answers"])


@pytest.mark.parametrize("v", DEVICE["vectors"], ids=ids(DEVICE["vectors"]))
def test_device_vector(v: dict[str, Any]) -> None:
    wire = bytes.fromhex(v["hex"])
    if "request" in v:  # the vector is self-consistent: its bytes are its request, compact
        assert wire == fr.encode_frame(fr.JsonFrame(env.dumps(v["request"])))
    else:
        assert wire == fr.encode_frame(fr.JsonFrame(bytes.fromhex(v["payload_hex"])))
    device = make_device()
    assert device.address == DEVICE["address"]
    before = snapshot(device)
    out = device.receive(wire)
    assert_output(out, [{"kind": "JSON", "payload": a} for a in v["answers"]], v["name"])
    for answer in v["answers"]:
        assert answer["v"] == 1 and answer["src"] == DEVICE["address"]
    if "status_msg_contains" in v:
        (frame,) = device_frames(out)
        first = json.loads(frame.payload)["resp"][0]  # type: ignore[union-attr]
        assert v["status_msg_contains"] in first["status_msg"]
    after = snapshot(device)
    refused = all(item["status"] != 0 for a in v["answers"] for item in a["resp"])
    if refused:  # every refusal (and silence) leaves the flash as it was
        assert v["flash_unchanged"], f"{v['name']}: a vector of refusals must claim an unchanged flash"
    if v["flash_unchanged"]:
        assert after == before, f"{v['name']}: the flash changed"
    else:
        assert after != before


# ---------------------------------------------------------------- transfer.json


def test_transfer_scripts_cover_the_flows() -> None:
    kinds = {
        f["kind"] for s in TRANSFER["scripts"] for step in s["steps"] for f in step.get("expect", [])
    }
    assert kinds == {"JSON", "READY", "ACK"}
    naks = [f for s in TRANSFER["scripts"] for step in s["steps"] for f in step.get("expect", []) if f.get("flags")]
    assert naks
    assert any(step.get("reset") for s in TRANSFER["scripts"] for step in s["steps"])


@pytest.mark.parametrize("script", TRANSFER["scripts"], ids=ids(TRANSFER["scripts"]))
def test_transfer_script(script: dict[str, Any]) -> None:
    device = make_device()
    for n, step in enumerate(script["steps"]):
        where = f"{script['name']} step {n} ({step['note']})"
        if step.get("reset"):
            device = Device(device.profile, device.flash)
            continue
        if "flash" in step:
            f = step["flash"]
            got = hashlib.sha256(device.flash.read(f["offset"], f["length"])).hexdigest()
            assert got == f["sha256"], where
            continue
        frame = to_frame(step["send"])
        wire = fr.encode_frame(frame)
        if "send_hex" in step:
            assert wire.hex() == step["send_hex"], where
        assert_output(device.receive(wire), step["expect"], where)


# ---------------------------------------------------------------- the generator


def test_generator_is_deterministic_and_files_are_current() -> None:
    """protocol/vectors/generate.py --check: the checked-in files are what the generator writes."""
    result = subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
