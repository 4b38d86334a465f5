"""The emulated device's SWUpdate service, driven in-process through Device.receive."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import urllib.parse
from typing import Any

import pytest

from uartupdate.core.framing import (
    AckFrame,
    FrameDecoder,
    FrameError,
    JsonFrame,
    ReadyFrame,
    cobs_encode,
    crc32,
    encode_frame,
)
from uartupdate.core.methods import check_result
from uartupdate.emulator import make_device
from uartupdate.emulator.device import Device
from uartupdate.emulator.storage import MetadataStore
from uartupdate.host.client import Client
from uartupdate.host.errors import DeviceError
from spec_examples import spec_example

ADDRESS = "//api.cesanta.com/device_123"
SRC = "//tests/host"
UPDATE = "/v1/SWUpdate.Update"
LIST = "/v1/SWUpdate.ListSections"

#: The ListSections response example of the spec.
SPEC_LIST_RESPONSE = spec_example("list_sections_response")

FACTORY_SECTIONS = [
    {"section": "bootloader", "version": "1.0.0", "writable": False},
    {"section": "config", "version": "1", "writable": True},
    {"section": "firmware", "version": "1234", "writable": True},
]


# ---------------------------------------------------------------- helpers


def frames(data: bytes) -> list[Any]:
    out = FrameDecoder(max_frame=1 << 20).feed(data)
    assert not any(isinstance(f, FrameError) for f in out), out
    return out


def send_raw(device: Device, payload: bytes) -> list[Any]:
    """Send one JSON frame carrying `payload`; the frames the device answers with."""
    return frames(device.receive(encode_frame(JsonFrame(payload))))


def send(device: Device, envelope: dict[str, Any]) -> list[Any]:
    return send_raw(device, json.dumps(envelope).encode())


def responses(out: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(f.payload) for f in out if isinstance(f, JsonFrame)]


def one_response(out: list[Any]) -> dict[str, Any]:
    resps = responses(out)
    assert len(resps) == 1, out
    return resps[0]


def request(*cmds: dict[str, Any], dst: str | None = ADDRESS, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"v": 1, "src": SRC}
    if dst is not None:
        env["dst"] = dst
    env["cmds"] = list(cmds)
    env.update(extra)
    return env


def cmd(name: str, id: int, args: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"cmd": name, "id": id}
    if args is not None:
        c["args"] = args
    return c


def sig_of(data: bytes) -> dict[str, str]:
    return {"alg": "sha256", "v": hashlib.sha256(data).hexdigest()}


def inline_args(section: str, data: bytes, version: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"section": section, "sig": sig_of(data), "blob": base64.b64encode(data).decode()}
    if version is not None:
        args["version"] = version
    return args


def whole_flash(device: Device) -> bytes:
    return device.flash.read(0, device.flash.size)


def section_bytes(device: Device, name: str) -> bytes:
    s = device.profile.section(name)
    return device.flash.read(s.offset, s.size)


def list_sections(device: Device) -> list[dict[str, Any]]:
    resp = one_response(send(device, request(cmd(LIST, 1))))
    assert resp["resp"][0]["status"] == 0
    return resp["resp"][0]["resp"]


def emu_url(path) -> str:
    return "emu://?" + urllib.parse.urlencode({"flash": str(path)})


@pytest.fixture
def device():
    d = make_device()
    yield d
    d.flash.close()


# ---------------------------------------------------------------- ListSections


def test_list_sections_matches_the_spec(device: Device) -> None:
    resp = one_response(send(device, request(cmd(LIST, 123))))
    assert resp["v"] == 1
    assert resp["src"] == ADDRESS
    assert resp["dst"] == SRC
    assert len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert answer["id"] == 123 and answer["status"] == 0
    assert "status_msg" not in answer
    result = answer["resp"]
    assert check_result("SWUpdate.ListSections", result) is None
    spec_item = SPEC_LIST_RESPONSE["resp"][0]["resp"][0]
    for item in result:
        assert set(item) == set(spec_item)
        assert {k: type(v) for k, v in item.items()} == {k: type(v) for k, v in spec_item.items()}
    assert result == FACTORY_SECTIONS
    assert spec_item in result  # the default board is the spec's example device
    # the answer has the key set of the spec example, envelope and answer alike
    assert set(resp) == set(SPEC_LIST_RESPONSE)
    assert set(answer) == set(SPEC_LIST_RESPONSE["resp"][0])


def test_check_result_can_fail() -> None:
    """The schema check used above does reject a result of the wrong shape."""
    assert check_result("SWUpdate.ListSections", [{"section": 1, "version": "1", "writable": True}])
    assert check_result("SWUpdate.ListSections", [{"section": "a", "version": "1", "writable": "yes"}])
    assert check_result("SWUpdate.ListSections", {"section": "a"})


def test_list_sections_without_v1_prefix_and_without_dst(device: Device) -> None:
    resp = one_response(send(device, request(cmd("SWUpdate.ListSections", 9), dst=None)))
    assert resp["resp"][0]["status"] == 0
    assert resp["resp"][0]["resp"] == FACTORY_SECTIONS


def test_first_boot_writes_factory_metadata(device: Device) -> None:
    meta = MetadataStore(device.flash, device.profile).load()
    assert meta is not None
    assert {n: s.version for n, s in meta.sections.items()} == {"bootloader": "1.0.0", "config": "1", "firmware": "1234"}


# ---------------------------------------------------------------- successful updates


def test_inline_update_writes_the_section_exactly(device: Device) -> None:
    data = os.urandom(1001)  # not a multiple of the write alignment
    before = whole_flash(device)
    resp = one_response(send(device, request(cmd(UPDATE, 7, inline_args("config", data, "2.5")))))
    assert resp["resp"] == [{"id": 7, "status": 0}]
    cfg = device.profile.section("config")
    got = section_bytes(device, "config")
    assert got[: len(data)] == data
    assert got[len(data):] == b"\xff" * (cfg.size - len(data))
    assert {s["section"]: s["version"] for s in list_sections(device)} == {"bootloader": "1.0.0", "config": "2.5", "firmware": "1234"}
    after = whole_flash(device)
    # nothing outside config, the metadata and staging changed
    changed = [
        (device.profile.metadata.offset, device.profile.metadata.size),
        (device.profile.staging.offset, device.profile.staging.size),
        (cfg.offset, cfg.size),
    ]
    for s in device.profile.sections:
        if s.name != "config":
            assert after[s.offset : s.offset + s.size] == before[s.offset : s.offset + s.size]
    mask_b, mask_a = bytearray(before), bytearray(after)
    for off, size in changed:
        mask_b[off : off + size] = mask_a[off : off + size] = b"\x00" * size
    assert mask_a == mask_b
    meta = MetadataStore(device.flash, device.profile).load()
    assert meta.install_section is None
    assert meta.sections["config"].size == len(data)
    assert meta.sections["config"].sha256 == hashlib.sha256(data).digest()


def test_inline_update_without_version_keeps_the_version(device: Device) -> None:
    data = os.urandom(64)
    resp = one_response(send(device, request(cmd(UPDATE, 7, inline_args("config", data)))))
    assert resp["resp"][0]["status"] == 0
    assert section_bytes(device, "config")[:64] == data
    assert list_sections(device) == FACTORY_SECTIONS


def test_version_of_exactly_32_bytes_is_accepted(device: Device) -> None:
    data = os.urandom(16)
    version = "v" * 32
    resp = one_response(send(device, request(cmd(UPDATE, 7, inline_args("config", data, version)))))
    assert resp["resp"][0]["status"] == 0
    assert list_sections(device)[1]["version"] == version


def test_empty_image_is_refused(device: Device) -> None:
    """SPEC 7.2: an image of 0 bytes is refused (400), inline or streamed."""
    assert_refused(device, cmd(UPDATE, 7, inline_args("config", b"", "empty")), 400)
    assert_refused(device, cmd(UPDATE, 8, {"section": "config", "sig": sig_of(b""), "size": 0, "version": "empty"}), 400)


def test_streamed_update_through_the_client(tmp_path) -> None:
    data = os.urandom(300 * 1024 + 3)
    path = tmp_path / "fw.bin"
    path.write_bytes(data)
    progress: list[tuple[int, int]] = []
    with Client(emu_url(tmp_path / "flash.bin"), timeout=2) as client:
        dev: Device = client.port.device
        before = whole_flash(dev)
        result = client.update("firmware", str(path), "2.0.0", progress=lambda done, size: progress.append((done, size)))
        assert result.section == "firmware" and result.size == len(data)
        assert result.resumed_from == 0
        assert result.stats.resent_bytes == 0
        assert result.stats.bytes_sent == len(data)
        fw = dev.profile.section("firmware")
        got = section_bytes(dev, "firmware")
        assert got[: len(data)] == data
        assert got[len(data):] == b"\xff" * (fw.size - len(data))
        after = whole_flash(dev)
        for name in ("bootloader", "config"):
            s = dev.profile.section(name)
            assert after[s.offset : s.offset + s.size] == before[s.offset : s.offset + s.size]
        assert client.list_sections()[2] == {"section": "firmware", "version": "2.0.0", "writable": True}
        assert dev.transfer is None
        assert MetadataStore(dev.flash, dev.profile).load().install_section is None
    assert progress and progress[-1] == (len(data), len(data))
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_streamed_update_protocol_by_hand(device: Device) -> None:
    """READY, DATA, ACK and the final answer, without the host client."""
    from uartupdate.core.framing import DataFrame

    data = os.urandom(10_000)
    args = {"section": "config", "sig": sig_of(data), "size": len(data), "version": "s1"}
    out = send(device, request(cmd(UPDATE, 42, args)))
    assert len(out) == 1 and isinstance(out[0], ReadyFrame)
    ready = out[0]
    assert ready.offset == 0 and ready.prefix_sha256 == hashlib.sha256(b"").digest()
    assert ready.chunk == device.profile.chunk and ready.window == device.profile.chunk * device.profile.buffers
    answers: list[Any] = []
    last_ack = 0
    for off in range(0, len(data), ready.chunk):
        end = min(off + ready.chunk, len(data))
        got = frames(device.receive(encode_frame(DataFrame(ready.xfer, off, data[off:end]))))
        for f in got:
            if isinstance(f, AckFrame):
                assert f.xfer == ready.xfer and not f.nak
                assert last_ack <= f.offset <= end  # never backwards, never past what arrived
                last_ack = f.offset
        # the device must acknowledge often enough for a host held to the window to keep sending
        assert min(end + ready.chunk, len(data)) - last_ack <= ready.window or end == len(data)
        answers += got
    acks = [a for a in answers if isinstance(a, AckFrame)]
    assert acks and acks[-1].offset == len(data)
    # the final answer comes after the last ACK
    assert isinstance(answers[-1], JsonFrame) and answers.index(acks[-1]) < len(answers) - 1
    final = responses(answers)
    assert final == [{"v": 1, "src": ADDRESS, "dst": SRC, "resp": [{"id": 42, "status": 0}]}]
    assert section_bytes(device, "config")[: len(data)] == data
    assert list_sections(device)[1]["version"] == "s1"


def test_streamed_data_out_of_order_is_nakked_once(device: Device) -> None:
    from uartupdate.core.framing import DataFrame

    data = os.urandom(8192)
    out = send(device, request(cmd(UPDATE, 1, {"section": "config", "sig": sig_of(data), "size": len(data)})))
    ready = out[0]
    c = ready.chunk
    for f in frames(device.receive(encode_frame(DataFrame(ready.xfer, 0, data[:c])))):
        assert f == AckFrame(ready.xfer, c)  # an ACK here is optional (the device may wait for more)
    # chunk 1 is lost: chunks 2 and 3 arrive; one NAK, then silence
    nak = frames(device.receive(encode_frame(DataFrame(ready.xfer, 2 * c, data[2 * c : 3 * c]))))
    assert nak == [AckFrame(ready.xfer, c, nak=True)]
    assert frames(device.receive(encode_frame(DataFrame(ready.xfer, 3 * c, data[3 * c : 4 * c])))) == []
    # a duplicate of chunk 0 is acknowledged with where the device is
    assert frames(device.receive(encode_frame(DataFrame(ready.xfer, 0, data[:c])))) == [AckFrame(ready.xfer, c)]
    # a chunk of another transfer is ignored
    assert frames(device.receive(encode_frame(DataFrame(ready.xfer + 1, c, data[c : 2 * c])))) == []
    out = []
    for off in range(c, len(data), c):
        out += frames(device.receive(encode_frame(DataFrame(ready.xfer, off, data[off : off + c]))))
    assert responses(out)[0]["resp"] == [{"id": 1, "status": 0}]
    assert section_bytes(device, "config")[: len(data)] == data


# ---------------------------------------------------------------- refusals


def assert_refused(device: Device, command: dict[str, Any], status: int) -> dict[str, Any]:
    before = whole_flash(device)
    sections = list_sections(device)
    resp = one_response(send(device, request(command)))
    assert resp["src"] == ADDRESS and resp["dst"] == SRC
    assert len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert answer["id"] == command["id"]
    assert answer["status"] == status, answer
    assert isinstance(answer.get("status_msg"), str) and answer["status_msg"]
    assert "resp" not in answer
    assert whole_flash(device) == before, "a refused command changed the flash"
    assert list_sections(device) == sections
    assert device.transfer is None
    return answer


GOOD = b"good image"
GOOD_SIG = sig_of(GOOD)
GOOD_BLOB = base64.b64encode(GOOD).decode()

REFUSALS = {
    "unknown command": (cmd("/v1/SWUpdate.Reboot", 5), 501),
    "unknown command in another service": (cmd("/v1/Shell.Exec", 5, {}), 501),
    "unknown section": (cmd(UPDATE, 5, {"section": "radio", "sig": GOOD_SIG, "blob": GOOD_BLOB}), 404),
    "section not writable": (cmd(UPDATE, 5, {"section": "bootloader", "sig": GOOD_SIG, "blob": GOOD_BLOB}), 403),
    "section not writable, streamed": (cmd(UPDATE, 5, {"section": "bootloader", "sig": GOOD_SIG, "size": 10}), 403),
    "section as int": (cmd(UPDATE, 5, {"section": 3, "sig": GOOD_SIG, "blob": GOOD_BLOB}), 400),
    "section missing": (cmd(UPDATE, 5, {"sig": GOOD_SIG, "blob": GOOD_BLOB}), 400),
    "sig missing": (cmd(UPDATE, 5, {"section": "config", "blob": GOOD_BLOB}), 400),
    "sig.alg missing": (cmd(UPDATE, 5, {"section": "config", "sig": {"v": GOOD_SIG["v"]}, "blob": GOOD_BLOB}), 400),
    "sig.v missing": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "sha256"}, "blob": GOOD_BLOB}), 400),
    "sig as string": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG["v"], "blob": GOOD_BLOB}), 400),
    "sig.v as int": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "sha256", "v": 5}, "blob": GOOD_BLOB}), 400),
    "version as int": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "version": 2}), 400),
    "blob as list": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": [1, 2]}), 400),
    "size as string": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "size": "10"}), 400),
    "size as bool": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "size": True}), 400),
    "negative size": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "size": -1}), 400),
    "args not an object": (cmd(UPDATE, 5, ["config"]), 400),  # type: ignore[arg-type]
    "unknown arg": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "forse": True}), 400),
    "unknown sig field": (
        cmd(UPDATE, 5, {"section": "config", "sig": {**GOOD_SIG, "key": "k"}, "blob": GOOD_BLOB}),
        400,
    ),
    "non-base64 blob": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": "not base64!!"}), 400),
    "base64 with bad padding": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB.rstrip("=") + "="}), 400),
    "sha256 mismatch": (cmd(UPDATE, 5, {"section": "config", "sig": sig_of(b"other"), "blob": GOOD_BLOB}), 422),
    "image larger than section": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "size": 64 * 1024 + 1}), 413),
    "unsupported sig alg": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "md5", "v": "00" * 16}, "blob": GOOD_BLOB}), 415),
    "unsupported sig alg, streamed": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "md5", "v": "00" * 16}, "size": 4}), 415),
    "bad sig.v hex": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "sha256", "v": "zz" * 32}, "blob": GOOD_BLOB}), 400),
    "short sig.v": (cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "sha256", "v": GOOD_SIG["v"][:62]}, "blob": GOOD_BLOB}), 400),
    "blob_url only": (
        cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob_url": "https://my.server/fw/123/metadata.json"}),
        400,
    ),
    "neither blob nor size": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG}), 400),
    "both blob and size": (cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "size": len(GOOD)}), 400),
    "version longer than 32 bytes": (
        cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "version": "1" * 33}),
        400,
    ),
    "version of 17 characters, 34 bytes": (
        cmd(UPDATE, 5, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "version": "\u00e9" * 17}),
        400,
    ),
    "cmd not a string": ({"cmd": 5, "id": 5}, 400),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_changes_nothing(device: Device, name: str) -> None:
    command, status = REFUSALS[name]
    assert_refused(device, command, status)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_after_an_update_changes_nothing(device: Device, name: str) -> None:
    """The same refusals on a board whose metadata and sections are no longer factory fresh."""
    data = os.urandom(5000)
    resp = one_response(send(device, request(cmd(UPDATE, 1, inline_args("config", data, "9")))))
    assert resp["resp"][0]["status"] == 0
    command, status = REFUSALS[name]
    assert_refused(device, command, status)
    assert section_bytes(device, "config")[:5000] == data


def test_streamed_image_with_wrong_digest_leaves_the_section(tmp_path) -> None:
    data = os.urandom(20_000)
    path = tmp_path / "cfg.bin"
    path.write_bytes(data)
    with Client(emu_url(tmp_path / "flash.bin"), timeout=2) as client:
        dev: Device = client.port.device
        before = section_bytes(dev, "config")
        with pytest.raises(DeviceError) as info:
            client.update("config", str(path), "bad", sig=sig_of(b"something else"))
        assert info.value.status == 422
        assert section_bytes(dev, "config") == before
        assert client.list_sections() == FACTORY_SECTIONS
        assert dev.staging.read_header() is None  # the bad image was not kept for a resume


# ---------------------------------------------------------------- envelope level


def frame_level(out: list[Any], status: int) -> dict[str, Any]:
    resp = one_response(out)
    assert resp["v"] == 1 and resp["src"] == ADDRESS
    assert len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert answer["id"] == 0
    assert answer["status"] == status, answer
    assert isinstance(answer.get("status_msg"), str) and answer["status_msg"]
    return resp


@pytest.mark.parametrize("v", [2, 0, "1", None, True, 1.5, 1.0, [1]])
def test_wrong_envelope_version(device: Device, v: Any) -> None:
    before = whole_flash(device)
    env = request(cmd(UPDATE, 5, inline_args("config", GOOD)))
    env["v"] = v
    resp = frame_level(send(device, env), 505)
    assert resp["dst"] == SRC
    assert whole_flash(device) == before


def test_missing_envelope_version(device: Device) -> None:
    env = request(cmd(LIST, 5))
    del env["v"]
    frame_level(send(device, env), 505)


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"not json",
        b'{"v":1,"src":"x","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":1}]',
        b"\xff\xfe{}",
        b"",
        b"[1,2]",
        b'"text"',
    ],
)
def test_invalid_json(device: Device, payload: bytes) -> None:
    frame_level(send_raw(device, payload), 400)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.pop("cmds"),
        lambda e: e.update(cmds=[]),
        lambda e: e.update(cmds={"cmd": LIST, "id": 1}),
        lambda e: e.update(cmds="ListSections"),
        lambda e: e.pop("src"),
        lambda e: e.update(src=5),
        lambda e: e.update(dst=5),
        lambda e: e.update(resp=[]),
    ],
)
def test_malformed_envelope(device: Device, change) -> None:
    env = request(cmd(LIST, 5))
    change(env)
    frame_level(send(device, env), 400)


@pytest.mark.parametrize("id", [0, -1, 2**53, 2**64, "1", 1.0, True, None])
def test_id_out_of_range(device: Device, id: Any) -> None:
    env = request({"cmd": LIST, "id": id})
    frame_level(send(device, env), 400)


def test_id_missing(device: Device) -> None:
    frame_level(send(device, request({"cmd": LIST})), 400)


def test_largest_id_is_answered(device: Device) -> None:
    resp = one_response(send(device, request(cmd(LIST, 2**53 - 1))))
    assert resp["resp"][0]["id"] == 2**53 - 1 and resp["resp"][0]["status"] == 0


def test_frame_for_another_device_is_not_answered(device: Device) -> None:
    before = whole_flash(device)
    for dst in ("//api.cesanta.com/device_999", "", ADDRESS + "/"):
        assert device.receive(encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1), dst=dst)).encode()))) == b""
        env = request(cmd(UPDATE, 2, inline_args("config", GOOD, "x")), dst=dst)
        assert device.receive(encode_frame(JsonFrame(json.dumps(env).encode()))) == b""
        # even a broken envelope for another device gets no answer
        env = request(cmd(LIST, 3), dst=dst)
        env["v"] = 2
        assert device.receive(encode_frame(JsonFrame(json.dumps(env).encode()))) == b""
    assert whole_flash(device) == before
    assert list_sections(device) == FACTORY_SECTIONS


def test_broadcast_is_answered(device: Device) -> None:
    resp = one_response(send(device, request(cmd(LIST, 77), dst="*")))
    assert resp["src"] == ADDRESS and resp["dst"] == SRC
    assert resp["resp"][0]["id"] == 77 and resp["resp"][0]["resp"] == FACTORY_SECTIONS


def test_several_commands_are_answered_in_order(device: Device) -> None:
    data = os.urandom(300)
    env = request(
        cmd(LIST, 11),
        cmd("/v1/SWUpdate.Reboot", 3),
        cmd(UPDATE, 20, {"section": "bootloader", "sig": sig_of(data), "blob": base64.b64encode(data).decode()}),
        cmd(UPDATE, 4, inline_args("config", data, "multi")),
        cmd(LIST, 99),
        cmd(LIST, 11),  # duplicate id
    )
    resp = one_response(send(device, env))
    answers = resp["resp"]
    assert [a["id"] for a in answers] == [11, 3, 20, 4, 99, 11]
    assert [a["status"] for a in answers] == [0, 501, 403, 0, 0, 400]
    assert answers[0]["resp"] == FACTORY_SECTIONS
    assert answers[4]["resp"][1] == {"section": "config", "version": "multi", "writable": True}
    assert section_bytes(device, "config")[:300] == data


def test_two_frames_in_one_read_are_both_answered(device: Device) -> None:
    data = encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1))).encode()))
    data += encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 2))).encode()))
    resps = responses(frames(device.receive(data)))
    assert [r["resp"][0]["id"] for r in resps] == [1, 2]


def test_frame_split_across_reads(device: Device) -> None:
    data = encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1))).encode()))
    out = b""
    for i in range(len(data)):
        out += device.receive(data[i : i + 1])
        if i < len(data) - 1:
            assert out == b""
    assert one_response(frames(out))["resp"][0]["resp"] == FACTORY_SECTIONS


# ---------------------------------------------------------------- framing robustness


def test_oversize_frame_is_refused_and_the_device_keeps_serving(device: Device) -> None:
    before = whole_flash(device)
    # more than 65536 bytes and no delimiter: SPEC 3.3 answers 413 only when the delimiter that
    # ends the oversized frame arrives, never while it is still arriving (half-duplex lines)
    assert device.receive(b"\x01" * 70_000) == b""
    assert device.receive(b"\x02" * 10_000) == b""
    resp = frame_level(frames(device.receive(b"\x00")), 413)
    assert "dst" not in resp  # the sender is unknown
    assert device.receive(b"\x00\x00") == b""  # one error per frame
    resp = one_response(send(device, request(cmd(LIST, 8))))
    assert resp["resp"][0]["id"] == 8 and resp["resp"][0]["resp"] == FACTORY_SECTIONS
    assert whole_flash(device) == before


def test_oversize_valid_frame_is_refused(device: Device) -> None:
    """A well-formed JSON frame larger than max_frame: 413 at frame level, nothing written."""
    data = os.urandom(60_000)  # base64: 80000 bytes, more than the 65536 byte frame
    before = whole_flash(device)
    out = device.receive(encode_frame(JsonFrame(json.dumps(request(cmd(UPDATE, 3, inline_args("config", data)))).encode())))
    frame_level(frames(out), 413)
    assert whole_flash(device) == before
    assert list_sections(device) == FACTORY_SECTIONS


def test_garbage_and_corrupted_frames_are_dropped(device: Device) -> None:
    rng = random.Random(1234)
    good = encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1))).encode()))
    # noise with delimiters in it, ending in a delimiter
    noise = bytes(rng.randrange(256) for _ in range(3000)) + b"\x00\x00\x00"
    assert device.receive(noise) == b""
    assert one_response(frames(device.receive(good)))["resp"][0]["id"] == 1

    # a frame with a wrong CRC
    body = b"\x01" + json.dumps(request(cmd(LIST, 2))).encode()
    bad_crc = cobs_encode(body + ((crc32(body) ^ 1).to_bytes(4, "little"))) + b"\x00"
    crc_errors = device.stats["crc_errors"]
    assert device.receive(bad_crc) == b""
    assert device.stats["crc_errors"] == crc_errors + 1
    # a frame with a flipped payload byte
    flipped = bytearray(encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 3))).encode())))
    flipped[20] ^= 0x04
    assert device.receive(bytes(flipped)) == b""
    # valid, garbage, valid in one read: both valid frames answered, in order
    mixed = encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 4))).encode())) + noise + bad_crc
    mixed += encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 5))).encode()))
    resps = responses(frames(device.receive(mixed)))
    assert [r["resp"][0]["id"] for r in resps] == [4, 5]
    # short runs, unknown kinds and truncated headers are dropped too
    junk = b"\x00" + cobs_encode(b"\x01\x02") + b"\x00"
    body = b"\x7f" + b"hello"
    junk += cobs_encode(body + crc32(body).to_bytes(4, "little")) + b"\x00"
    body = b"\x02\x01"  # DATA with a truncated header
    junk += cobs_encode(body + crc32(body).to_bytes(4, "little")) + b"\x00"
    assert device.receive(junk) == b""
    assert one_response(send(device, request(cmd(LIST, 6))))["resp"][0]["resp"] == FACTORY_SECTIONS
    assert list_sections(device) == FACTORY_SECTIONS


def test_noise_without_trailing_delimiter_costs_one_frame(device: Device) -> None:
    """Noise glued to the front of a frame spoils that frame only; the sender's retry is answered."""
    good = encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1))).encode()))
    assert device.receive(b"\x13\x37\xfe\x99" * 10) == b""
    assert device.receive(good) == b""
    assert one_response(frames(device.receive(good)))["resp"][0]["id"] == 1


# ---------------------------------------------------------------- power cycles


def test_version_and_image_survive_a_power_cycle(tmp_path) -> None:
    path = tmp_path / "flash.bin"
    data = os.urandom(3333)
    dev = make_device(flash=path)
    resp = one_response(send(dev, request(cmd(UPDATE, 1, inline_args("config", data, "persist-1")))))
    assert resp["resp"][0]["status"] == 0
    dev.flash.close()
    dev = make_device(flash=path)
    try:
        assert list_sections(dev)[1] == {"section": "config", "version": "persist-1", "writable": True}
        assert section_bytes(dev, "config")[: len(data)] == data
    finally:
        dev.flash.close()
    raw = path.read_bytes()
    off = load_profile_section("config").offset
    assert raw[off : off + len(data)] == data


def test_streamed_update_survives_a_power_cycle(tmp_path) -> None:
    data = os.urandom(100_000)
    img = tmp_path / "fw.bin"
    img.write_bytes(data)
    with Client(emu_url(tmp_path / "flash.bin")) as client:
        client.update("firmware", str(img), "fw-2")
    dev = make_device(flash=tmp_path / "flash.bin")
    try:
        assert list_sections(dev)[2]["version"] == "fw-2"
        assert section_bytes(dev, "firmware")[: len(data)] == data
    finally:
        dev.flash.close()


def load_profile_section(name: str):
    from uartupdate.emulator.profile import load_profile

    return load_profile().section(name)


class PowerLoss(Exception):
    pass


def test_interrupted_install_is_completed_at_the_next_boot(tmp_path, monkeypatch) -> None:
    """Power is lost while staging is copied into the section; the bootloader redoes the copy."""
    path = tmp_path / "flash.bin"
    image = tmp_path / "fw.bin"
    data = os.urandom(200_000)  # four 64 KiB copy blocks
    image.write_bytes(data)
    with Client(emu_url(path), timeout=2) as client:
        dev: Device = client.port.device
        fw = dev.profile.section("firmware")
        old_section = section_bytes(dev, "firmware")
        real_program = dev.flash.program
        copies = []

        def program(offset: int, chunk: bytes) -> None:
            if fw.offset <= offset < fw.offset + fw.size:
                copies.append(offset)
                if len(copies) == 2:
                    real_program(offset, chunk[: len(chunk) // 2])  # half a block, then the lights go out
                    raise PowerLoss
            real_program(offset, chunk)

        monkeypatch.setattr(dev.flash, "program", program)
        with pytest.raises(PowerLoss):
            client.update("firmware", str(image), "3.0")
        # what the flash holds at the moment of the power cut
        meta = MetadataStore(dev.flash, dev.profile).load()
        assert meta.install_section == "firmware"
        half = section_bytes(dev, "firmware")
        assert half != old_section and half[: len(data)] != data

    dev = make_device(flash=path)  # power up
    try:
        assert section_bytes(dev, "firmware")[: len(data)] == data
        assert section_bytes(dev, "firmware")[len(data):] == b"\xff" * (fw.size - len(data))
        meta = MetadataStore(dev.flash, dev.profile).load()
        assert meta.install_section is None
        assert meta.sections["firmware"].sha256 == hashlib.sha256(data).digest()
        assert list_sections(dev)[2]["version"] == "3.0"
        assert dev.staging.read_header() is None
    finally:
        dev.flash.close()


def test_frame_of_exactly_the_maximum_size_is_served(device: Device) -> None:
    """max_frame counts kind .. crc: a body of exactly 65536 bytes is served, one byte more is 413."""
    base = json.dumps(request(cmd(LIST, 1))).encode()
    limit = device.profile.max_frame - 1 - 4  # kind byte and CRC-32
    resp = one_response(send_raw(device, base + b" " * (limit - len(base))))
    assert resp["resp"][0]["status"] == 0 and resp["resp"][0]["resp"] == FACTORY_SECTIONS
    frame_level(send_raw(device, base + b" " * (limit + 1 - len(base))), 413)
    assert one_response(send(device, request(cmd(LIST, 2))))["resp"][0]["status"] == 0


@pytest.mark.parametrize(
    "v",
    [
        " " + GOOD_SIG["v"],  # leading blank
        GOOD_SIG["v"] + "\n",  # trailing newline
        " ".join(GOOD_SIG["v"][i : i + 2] for i in range(0, 64, 2)),  # "e3 b0 c4 ..."
        GOOD_SIG["v"][:32] + "\t" + GOOD_SIG["v"][32:],
    ],
)
def test_sig_v_must_be_exactly_64_hex_digits(device: Device, v: str) -> None:
    """The device's own rule ("sig.v must be the 64 hex digits of a SHA-256 digest") admits no blanks."""
    assert_refused(device, cmd(UPDATE, 5, {"section": "config", "sig": {"alg": "sha256", "v": v}, "blob": GOOD_BLOB}), 400)


def test_uppercase_sig_v_is_accepted(device: Device) -> None:
    args = {"section": "config", "sig": {"alg": "sha256", "v": GOOD_SIG["v"].upper()}, "blob": GOOD_BLOB}
    resp = one_response(send(device, request(cmd(UPDATE, 5, args))))
    assert resp["resp"] == [{"id": 5, "status": 0}]
    assert section_bytes(device, "config")[: len(GOOD)] == GOOD


@pytest.mark.parametrize("version", ["1.0\u0000", "\u0000", "a\u0000b", "\u00e9t\u00e9-2", " 1 "])
def test_accepted_version_is_reported_the_same_after_a_power_cycle(tmp_path, version: str) -> None:
    """A version the device accepts must be stored as given: ListSections before and after a reset agree."""
    path = tmp_path / "flash.bin"
    dev = make_device(flash=path)
    resp = one_response(send(dev, request(cmd(UPDATE, 1, inline_args("config", GOOD, version)))))
    status = resp["resp"][0]["status"]
    if status != 0:  # refusing such a version is fine too, but then nothing may change
        assert status == 400
        dev.flash.close()
        return
    before = list_sections(dev)
    assert before[1]["version"] == version
    dev.flash.close()
    dev = make_device(flash=path)
    try:
        assert list_sections(dev) == before
    finally:
        dev.flash.close()


# ---------------------------------------------------------------- SPEC details (protocol/SPEC.md)


def test_answers_are_never_answered(device: Device) -> None:
    """SPEC 4: a frame with `resp` and no `cmds` (another device's answer, an echo) gets no answer."""
    answer = {"v": 1, "src": ADDRESS, "dst": SRC, "resp": [{"id": 1, "status": 0}]}
    assert device.receive(encode_frame(JsonFrame(json.dumps(answer).encode()))) == b""
    del answer["dst"]
    assert device.receive(encode_frame(JsonFrame(json.dumps(answer).encode()))) == b""
    answer["v"] = 2  # even a broken one
    assert device.receive(encode_frame(JsonFrame(json.dumps(answer).encode()))) == b""
    # the device's own answer looped back (local echo) is not answered either
    echo = device.receive(encode_frame(JsonFrame(json.dumps(request(cmd(LIST, 1))).encode())))
    assert echo and device.receive(echo) == b""


def test_frame_level_answer_dst(device: Device) -> None:
    """SPEC 5.4: dst is the request's src from check 5 on, absent before or without a string src."""
    assert "dst" not in frame_level(send_raw(device, b"{nope"), 400)
    env = request(cmd(LIST, 1))
    env["v"] = 3
    assert frame_level(send(device, env), 505)["dst"] == SRC
    env = request(cmd(LIST, 1))
    del env["src"]
    assert "dst" not in frame_level(send(device, env), 400)
    env = request(cmd(LIST, 1))
    env["src"] = 12
    assert "dst" not in frame_level(send(device, env), 400)
    env = request(cmd(LIST, 1))
    del env["cmds"]
    assert frame_level(send(device, env), 400)["dst"] == SRC


def test_too_deeply_nested_json(device: Device) -> None:
    """SPEC 5.3 check 4: nothing deeper than 32 (the envelope at depth 0)."""
    def nest(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    # args is at depth 3 (envelope > cmds > command > args): its members at 4
    ok_env = request(cmd(LIST, 1))
    ok_env["key"] = nest(31)  # the innermost 1 at depth 32
    assert one_response(send(device, ok_env))["resp"][0]["status"] == 0
    deep = request(cmd(LIST, 1))
    deep["key"] = nest(32)  # depth 33
    assert frame_level(send(device, deep), 400)["dst"] == SRC
    # deep enough to exhaust a recursive parser: still one clean frame-level 400
    payload = b'{"v":1,"src":"x","cmds":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    frame_level(send_raw(device, payload), 400)


def test_one_bad_id_refuses_the_whole_frame(device: Device) -> None:
    """SPEC 5.3 check 10: one command with an invalid id refuses the frame; none of it runs."""
    before = whole_flash(device)
    env = request(cmd(UPDATE, 1, inline_args("config", GOOD, "never")), {"cmd": LIST, "id": 1.5})
    frame_level(send(device, env), 400)
    assert whole_flash(device) == before
    assert list_sections(device) == FACTORY_SECTIONS


def test_null_dst_is_absent(device: Device) -> None:
    resp = one_response(send(device, request(cmd(LIST, 4), dst=None) | {"dst": None}))
    assert resp["resp"][0]["status"] == 0


@pytest.mark.parametrize("args", [None, {}])
def test_list_sections_takes_no_arguments(device: Device, args) -> None:
    resp = one_response(send(device, request(cmd(LIST, 4, args))))
    assert resp["resp"][0]["resp"] == FACTORY_SECTIONS
    assert_refused(device, cmd(LIST, 5, {"verbose": True}), 400)


MORE_REFUSALS = {
    "size written with a fraction": ('{"section":"config","sig":%s,"size":2.0}', 400),
    "size written with an exponent": ('{"section":"config","sig":%s,"size":1e3}', 400),
    "blob without padding": ('{"section":"config","sig":%s,"blob":"QQ"}', 400),
    "blob with url-safe alphabet": ('{"section":"config","sig":%s,"blob":"-_-_"}', 400),
    "blob with a line break": ('{"section":"config","sig":%s,"blob":"QUJD\\nREVG"}', 400),
    "blob with a blank": ('{"section":"config","sig":%s,"blob":"QUJD REVG"}', 400),
    "alg in upper case": ('{"section":"config","sig":{"alg":"SHA256","v":"%s"},"blob":"QQ=="}', 415),
    "args null": (None, 400),
}


@pytest.mark.parametrize("name", list(MORE_REFUSALS))
def test_more_refusals(device: Device, name: str) -> None:
    template, status = MORE_REFUSALS[name]
    if template is None:
        raw = '{"v":1,"src":"%s","cmds":[{"cmd":"%s","id":5,"args":null}]}' % (SRC, UPDATE)
    else:
        sig = sig_of(b"A")
        args = template % (sig["v"] if "SHA256" in template else json.dumps(sig))
        raw = '{"v":1,"src":"%s","cmds":[{"cmd":"%s","id":5,"args":%s}]}' % (SRC, UPDATE, args)
    before = whole_flash(device)
    resp = one_response(send_raw(device, raw.encode()))
    assert resp["resp"][0]["id"] == 5
    assert resp["resp"][0]["status"] == status, resp
    assert resp["resp"][0]["status_msg"]
    assert whole_flash(device) == before


def test_non_zero_pad_bits_are_accepted(device: Device) -> None:
    """SPEC 7.2: the reference ignores non-zero pad bits: "QR==" is "A"."""
    args = {"section": "config", "sig": sig_of(b"A"), "blob": "QR==", "version": "pad"}
    assert one_response(send(device, request(cmd(UPDATE, 5, args))))["resp"] == [{"id": 5, "status": 0}]
    assert section_bytes(device, "config")[:4] == b"A\xff\xff\xff"


def test_blob_url_beside_blob_is_ignored(device: Device) -> None:
    args = inline_args("config", GOOD, "with-url") | {"blob_url": "https://my.server/fw.bin"}
    assert one_response(send(device, request(cmd(UPDATE, 5, args))))["resp"] == [{"id": 5, "status": 0}]
    assert section_bytes(device, "config")[: len(GOOD)] == GOOD


@pytest.mark.parametrize(
    "args, status",
    [
        ({"blob_url": "https://x/fw", "section": "firmware", "version": "123"}, 400),  # the spec example: no sig
        ({"section": "radio", "sig": {"alg": "md5", "v": "x"}, "size": 10**9}, 404),  # section before alg
        ({"section": "bootloader", "sig": {"alg": "md5", "v": "x"}, "size": 10**9}, 403),
        ({"section": "config", "sig": {"alg": "md5", "v": "x"}, "size": 10**9}, 415),  # alg before sig.v
        ({"section": "config", "sig": sig_of(b"other"), "blob": GOOD_BLOB + "!"}, 400),  # base64 before digest
        ({"section": "config", "sig": sig_of(b"other"), "size": 10**9}, 413),
    ],
)
def test_checks_are_made_in_the_spec_order(device: Device, args, status: int) -> None:
    assert_refused(device, cmd(UPDATE, 5, args), status)


# ---------------------------------------------------------------- streamed transfer (SPEC 8)


def open_transfer(device: Device, data: bytes, id: int = 1, **extra: Any) -> ReadyFrame:
    args = {"section": "config", "sig": sig_of(data), "size": len(data)} | extra
    out = send(device, request(cmd(UPDATE, id, args)))
    readies = [f for f in out if isinstance(f, ReadyFrame)]
    assert len(readies) == 1, out
    return readies[0]


def data_frame(ready: ReadyFrame, data: bytes, offset: int) -> bytes:
    from uartupdate.core.framing import DataFrame

    return encode_frame(DataFrame(ready.xfer, offset, data[offset : offset + ready.chunk]))


def test_repeated_update_continues_the_transfer(device: Device) -> None:
    data = os.urandom(12_000)
    ready = open_transfer(device, data, id=1)
    device.receive(data_frame(ready, data, 0) + data_frame(ready, data, 2048))
    again = open_transfer(device, data, id=2)  # READY was lost: the host repeats its Update
    assert again.xfer == ready.xfer
    assert again.offset == 4096
    assert again.prefix_sha256 == hashlib.sha256(data[:4096]).digest()
    out = b"".join(device.receive(data_frame(ready, data, off)) for off in range(4096, len(data), 2048))
    resps = responses(frames(out))
    assert [r["resp"] for r in resps] == [[{"id": 2, "status": 0}]]  # the old id gets no answer
    assert section_bytes(device, "config")[: len(data)] == data


def test_new_update_supersedes_the_open_transfer(device: Device) -> None:
    first, second = os.urandom(9000), os.urandom(7000)
    ready = open_transfer(device, first, id=1)
    device.receive(data_frame(ready, first, 0))
    out = send(device, request(cmd(UPDATE, 2, {"section": "config", "sig": sig_of(second), "size": len(second)})))
    assert isinstance(out[0], JsonFrame) and isinstance(out[1], ReadyFrame)  # 499 before the new READY
    assert json.loads(out[0].payload)["resp"][0]["id"] == 1
    assert json.loads(out[0].payload)["resp"][0]["status"] == 499
    new = out[1]
    assert new.xfer != ready.xfer and new.offset == 0
    assert device.receive(data_frame(ready, first, 2048)) == b""  # the old xfer is ignored
    out = b"".join(device.receive(data_frame(new, second, off)) for off in range(0, len(second), 2048))
    assert responses(frames(out))[0]["resp"] == [{"id": 2, "status": 0}]
    assert section_bytes(device, "config")[: len(second)] == second


def test_refusal_leaves_the_open_transfer_open(device: Device) -> None:
    data = os.urandom(10_000)
    ready = open_transfer(device, data, id=1)
    device.receive(data_frame(ready, data, 0) + data_frame(ready, data, 2048))
    before = whole_flash(device)
    resp = one_response(send(device, request(cmd(UPDATE, 2, {"section": "bootloader", "sig": sig_of(data), "size": 10}))))
    assert resp["resp"][0]["status"] == 403
    assert one_response(send(device, request(cmd(LIST, 3))))["resp"][0]["status"] == 0
    assert whole_flash(device) == before
    out = b"".join(device.receive(data_frame(ready, data, off)) for off in range(4096, len(data), 2048))
    assert responses(frames(out))[0]["resp"] == [{"id": 1, "status": 0}]
    assert section_bytes(device, "config")[: len(data)] == data


def test_abort_answers_499_and_keeps_the_staged_bytes(device: Device) -> None:
    from uartupdate.core.framing import AbortFrame

    data = os.urandom(20_000)
    ready = open_transfer(device, data, id=1)
    for off in range(0, 10_240, 2048):
        device.receive(data_frame(ready, data, off))
    assert device.receive(encode_frame(AbortFrame(ready.xfer + 7))) == b""  # another xfer: ignored
    resp = one_response(frames(device.receive(encode_frame(AbortFrame(ready.xfer)))))
    assert resp["resp"] == [{"id": 1, "status": 499, "status_msg": resp["resp"][0]["status_msg"]}]
    assert device.receive(data_frame(ready, data, 10_240)) == b""  # the transfer is closed
    again = open_transfer(device, data, id=2)
    assert again.offset == 8192  # whole staged sectors
    assert again.prefix_sha256 == hashlib.sha256(data[:8192]).digest()
    assert again.xfer != ready.xfer
    out = b"".join(device.receive(data_frame(again, data, off)) for off in range(8192, len(data), 2048))
    assert responses(frames(out))[0]["resp"] == [{"id": 2, "status": 0}]
    assert section_bytes(device, "config")[: len(data)] == data


def test_resume_false_starts_over(device: Device) -> None:
    from uartupdate.core.framing import AbortFrame

    data = os.urandom(20_000)
    ready = open_transfer(device, data)
    for off in range(0, 10_240, 2048):
        device.receive(data_frame(ready, data, off))
    device.receive(encode_frame(AbortFrame(ready.xfer)))
    again = open_transfer(device, data, id=2, resume=False)
    assert again.offset == 0 and again.prefix_sha256 == hashlib.sha256(b"").digest()


def test_resume_after_a_reset_at_the_protocol_level(tmp_path) -> None:
    """SPEC 8.6: after a reset the same Update resumes at the last whole staged sector, xfer from 1."""
    path = tmp_path / "flash.bin"
    data = os.urandom(5 * 4096 + 100)
    dev = make_device(flash=path)
    ready = open_transfer(dev, data, version="staged")
    for off in range(0, 3 * 4096 + 2048, 2048):  # three and a half sectors, then the power goes
        dev.receive(data_frame(ready, data, off))
    open_transfer(dev, os.urandom(10), id=9)  # another xfer was allocated before the reset
    dev.flash.close()
    dev = make_device(flash=path)
    try:
        again = open_transfer(dev, data, version="staged")
        assert again.xfer == 1
        assert again.offset == 0  # the other Update reset the staging area (SPEC 8.5)
    finally:
        dev.flash.close()

    path.unlink()
    dev = make_device(flash=path)
    ready = open_transfer(dev, data, version="staged")
    for off in range(0, 3 * 4096 + 2048, 2048):
        dev.receive(data_frame(ready, data, off))
    dev.flash.close()
    dev = make_device(flash=path)
    try:
        again = open_transfer(dev, data, version="staged")
        assert again.xfer == 1
        assert again.offset == 3 * 4096
        assert again.prefix_sha256 == hashlib.sha256(data[: 3 * 4096]).digest()
        out = b"".join(dev.receive(data_frame(again, data, off)) for off in range(again.offset, len(data), 2048))
        assert responses(frames(out))[0]["resp"] == [{"id": 1, "status": 0}]
        assert list_sections(dev)[1]["version"] == "staged"
        assert section_bytes(dev, "config")[: len(data)] == data
    finally:
        dev.flash.close()


def test_device_ignores_ack_ready_and_stray_data(device: Device) -> None:
    from uartupdate.core.framing import DataFrame

    noise = encode_frame(AckFrame(1, 100)) + encode_frame(ReadyFrame(1, 0, 2048, 8192, b"\0" * 32))
    noise += encode_frame(DataFrame(1, 0, b"data"))  # no open transfer
    before = whole_flash(device)
    assert device.receive(noise) == b""
    assert whole_flash(device) == before


def test_data_running_past_the_size_ends_the_transfer_and_installs_nothing(device: Device) -> None:
    from uartupdate.core.framing import DataFrame

    data = os.urandom(3000)
    before = section_bytes(device, "config")
    ready = open_transfer(device, data)
    device.receive(encode_frame(DataFrame(ready.xfer, 0, data[:2048])))
    out = device.receive(encode_frame(DataFrame(ready.xfer, 2048, data[2048:] + b"xx")))
    answer = responses(frames(out))[0]["resp"][0]
    assert answer["status"] == 400 and "more bytes than the image" in answer["status_msg"]
    assert section_bytes(device, "config") == before
