"""Property and fuzz tests of every parser: frames, chunk frames, envelopes, method arguments,
metadata documents, signature files, and the device's whole receive path (tests/fuzz_device.py).

Bounded for CI (a few hundred examples each); run tests/fuzz_device.py by hand for hours.
"""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fuzz_device
from uartupdate.core import envelope as env
from uartupdate.core import framing
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
    cobs_max_encoded,
    encode_frame,
    parse_body,
)
from uartupdate.core.methods import check_args, definitions
from uartupdate.host import image as image_mod
from uartupdate.host.errors import ImageError, UsageError
from uartupdate.images import signing

FEW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
frames_st = st.one_of(
    st.builds(JsonFrame, st.binary(max_size=600)),
    st.builds(DataFrame, u16, u32, st.binary(max_size=3000)),
    st.builds(AckFrame, u16, u32, st.booleans()),
    st.builds(ReadyFrame, u16, u32, u16, u32, st.binary(min_size=32, max_size=32)),
    st.builds(AbortFrame, u16),
)


# ---------------------------------------------------------------- COBS and frames


@SOME
@given(st.binary(max_size=2000))
@example(b"\x01" * 254)
@example(b"\x01" * 254 + b"\x00")
@example(b"\x00" * 300)
def test_cobs_round_trip_and_bounds(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= cobs_max_encoded(len(data))
    assert cobs_decode(encoded) == data


@SOME
@given(frames_st, st.lists(st.integers(0, 4000), max_size=5))
def test_decode_of_encode_is_the_frame_however_it_is_cut(frame, cuts) -> None:
    wire = encode_frame(frame)
    points = sorted(c % (len(wire) + 1) for c in cuts)
    decoder = FrameDecoder()
    got = []
    for a, b in zip([0, *points], [*points, len(wire)]):
        got += decoder.feed(wire[a:b])
    assert got == [frame]


@SOME
@given(st.lists(frames_st, min_size=1, max_size=5), st.binary(max_size=200))
def test_frames_after_noise_are_decoded(frames, noise) -> None:
    """Noise costs at most the frame it runs into; a delimiter after it restores sync."""
    wire = noise + b"\x00" + b"".join(encode_frame(f) for f in frames)
    got = [f for f in FrameDecoder().feed(wire) if not isinstance(f, FrameError)]
    assert got == frames


class _Counting:
    """Wraps cobs_decode and crc32 to count the bytes they process: the decoder's work."""

    def __init__(self, monkeypatch) -> None:
        self.cobs = self.crc = 0
        real_cobs, real_crc = framing.cobs_decode, framing.crc32

        def cobs(data: bytes) -> bytes:
            self.cobs += len(data)
            return real_cobs(data)

        def crc(data: bytes) -> int:
            self.crc += len(data)
            return real_crc(data)

        monkeypatch.setattr(framing, "cobs_decode", cobs)
        monkeypatch.setattr(framing, "crc32", crc)


@pytest.mark.parametrize("max_frame", [16, 300, 65536])
@FEW
@given(data=st.binary(max_size=5000), piece=st.integers(1, 700))
def test_any_bytes_give_frames_or_errors_in_linear_work_and_bounded_memory(max_frame, data, piece) -> None:
    with pytest.MonkeyPatch.context() as mp:
        work = _Counting(mp)
        decoder = FrameDecoder(max_frame)
        for i in range(0, len(data), piece):
            for item in decoder.feed(data[i : i + piece]):
                assert isinstance(item, (FrameError, JsonFrame, DataFrame, AckFrame, ReadyFrame, AbortFrame))
            assert len(decoder._buf) <= cobs_max_encoded(max_frame)  # one frame at most, buffered
    # every byte is unstuffed at most once and checksummed at most once: linear in the input
    assert work.cobs <= len(data) and work.crc <= len(data)


@pytest.mark.parametrize("pattern", [b"\x01", b"\xff", b"\x05\x11", b"\x00"])
def test_memory_stays_within_a_frame_whatever_arrives(pattern: bytes) -> None:
    """8 MiB with no delimiter (or nothing but delimiters): the decoder never holds more than
    one maximum frame, whatever a length or a COBS code claims."""
    decoder = FrameDecoder(65536)
    block = pattern * (4096 // len(pattern))
    blocks = 64 if pattern == b"\x00" else 8 * 256  # nothing but delimiters: 256 KiB is plenty
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        errors = 0
        for _ in range(blocks):
            errors += sum(isinstance(x, FrameError) for x in decoder.feed(block))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 3 * cobs_max_encoded(65536)
    assert errors <= 8 * (1 << 20) // 65536 + 1 or pattern == b"\x00"


@SOME
@given(st.binary(max_size=3000))
def test_any_body_is_a_frame_or_a_reason(body: bytes) -> None:
    got = parse_body(body)
    assert isinstance(got, (FrameError, JsonFrame, DataFrame, AckFrame, ReadyFrame, AbortFrame))


@SOME
@given(u16, u32, st.binary(max_size=4096))
def test_chunk_frames_round_trip(xfer: int, offset: int, data: bytes) -> None:
    frame = DataFrame(xfer, offset, data)
    assert parse_body(cobs_decode(encode_frame(frame)[:-1])) == frame
    assert framing.frame_size(frame) == 1 + 6 + len(data) + 4


# ---------------------------------------------------------------- envelopes and arguments

json_values = fuzz_device.json_values


@SOME
@given(st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b'{"v":1,"src":"\\ud800","cmds":[{"cmd":"x","id":1}]}')
@example(b'{"v":1,"src":"x","cmds":[{"cmd":"x","id":1,"args":{"\\udfff":1}}]}')
@example(b"[" * 5000 + b"]" * 5000)
@example(b'{"v":1,"src":"x","cmds":[{"cmd":"x","id":' + b"9" * 5000 + b"}]}")
def test_any_payload_is_a_request_or_an_envelope_error(payload: bytes) -> None:
    try:
        req = env.parse_request(payload)
    except env.EnvelopeError as exc:
        assert exc.status in (400, 505) and exc.msg
        assert exc.src is None or isinstance(exc.src, str)
        if exc.src is not None:
            exc.src.encode("utf-8")  # an answer can carry it back
        return
    assert isinstance(req.src, str) and req.commands
    env.dumps(env.response("dev", req.src, [env.answer(1)]))  # whatever came in can be answered
    for cmd in req.commands:
        assert 1 <= cmd.id <= env.MAX_ID


commands_st = st.lists(
    st.builds(
        env.command,
        st.text(max_size=30),
        st.integers(1, env.MAX_ID),
        st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c["id"],
)


@SOME
@given(st.text(max_size=30), st.none() | st.text(max_size=30), commands_st)
def test_request_round_trip(src: str, dst: str | None, cmds: list[dict[str, Any]]) -> None:
    req = env.parse_request(env.dumps(env.request(src, dst, cmds)))
    assert (req.src, req.dst) == (src, dst)
    assert [(c.cmd, c.id, c.args) for c in req.commands] == [(c["cmd"], c["id"], c.get("args", {})) for c in cmds]


@SOME
@given(st.binary(max_size=600) | json_values.map(lambda v: json.dumps({"resp": [v]}).encode()))
@example(b'{"v":1,"resp":[{"id":1,"status":0,"resp":"\\ud800"}]}')
def test_any_payload_is_a_response_or_none(payload: bytes) -> None:
    got = env.parse_response(payload)
    assert got is None or (isinstance(got, dict) and isinstance(got["resp"], list))
    if got is not None:
        json.dumps(got, ensure_ascii=False).encode("utf-8")  # printable as it is


@SOME
@given(st.sampled_from(sorted(definitions())), st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_method_arguments_are_judged_never_crash(method: str, args: dict[str, Any]) -> None:
    problem = check_args(method, args)
    assert problem is None or (isinstance(problem, str) and problem)


# ---------------------------------------------------------------- metadata documents and signature files

metadata_docs = st.one_of(
    st.binary(max_size=300).map(lambda b: b"{" + b),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["url", "size", "version", "sig", "section", "other"]),
        json_values | st.sampled_from(["fw.bin", "", ".", "\x00", "nope/x.bin", "file:///nonexistent"]),
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
)


@SOME
@given(metadata_docs)
@example(b'{"url":"fw.bin","sig":{"alg":"sha256","v":"00"}}')
@example(b'{"url":"\\u0000"}')
@example(b'{"url":"fw.bin","x":' + b"[" * 3000 + b"]" * 3000 + b"}")
def test_any_metadata_document_is_an_image_or_an_image_error(doc: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        def offline(url: str, timeout: float) -> Path:
            raise ImageError(f"cannot reach {url}: no network in this test")

        mp.setattr(image_mod, "_download", offline)
        Path(tmp, "fw.bin").write_bytes(b"image bytes")
        path = Path(tmp, "meta.json")
        path.write_bytes(doc)
        try:
            img = image_mod.open_image(str(path), timeout=1)
        except ImageError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert img.size == len(img.read(0, img.size))
        img.close()


@SOME
@given(st.sampled_from(signing.ALGS), st.text(max_size=600) | st.binary(max_size=400).map(lambda b: __import__("base64").b64encode(b).decode()))
def test_any_signature_value_is_decoded_or_refused_with_a_reason(alg: str, v: str) -> None:
    try:
        raw = signing.decode_signature(alg, v)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(raw, bytes)


@FEW
@given(st.binary(max_size=600) | st.text(max_size=300).map(lambda t: ("-----BEGIN PUBLIC KEY-----\n" + t + "\n-----END PUBLIC KEY-----\n").encode()))
def test_any_key_file_is_a_key_or_refused_with_a_reason(pem: bytes) -> None:
    try:
        signing.load_public_key(pem, "test key")
    except signing.KeyError_ as exc:
        assert "test key" in str(exc)


@SOME
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 5000)
@example(b"\xff\xfe")
def test_any_signature_file_is_read_or_refused_with_one_line(content: bytes) -> None:
    from uartupdate.host.cli_boot import _read_sig_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "image.sig")
        path.write_bytes(content)
        try:
            doc = _read_sig_file(str(path))
        except UsageError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
    assert isinstance(doc["alg"], str) and isinstance(doc["v"], str)


# ---------------------------------------------------------------- the device's whole receive path


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_device.streams())
def test_device_receive_path_structured(chunks: list[bytes]) -> None:
    fuzz_device.run_device(chunks)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_device.raw_streams)
def test_device_receive_path_raw_bytes(chunks: list[bytes]) -> None:
    outcome = fuzz_device.run_device(chunks)
    assert not outcome.accepted  # random bytes never carry a valid update


def test_fuzz_target_finds_a_device_that_writes_flash_on_garbage(monkeypatch) -> None:
    """The target's flash check is real: a device that scribbles on noise is caught."""
    from uartupdate.emulator.device import Device

    real = Device.receive

    def scribbling(self, data: bytes) -> bytes:
        if data:
            self.flash.erase(self.profile.section("config").offset, self.profile.sector_size)  # type: ignore[union-attr]
            self.flash.program(self.profile.section("config").offset, b"\x00\x00\x00\x00")  # type: ignore[union-attr]
        return real(self, data)

    monkeypatch.setattr(Device, "receive", scribbling)
    with pytest.raises(AssertionError, match="flash changed"):
        fuzz_device.run_device([b"noise\x00"])


def test_lone_surrogates_are_refused_at_frame_level_and_the_device_keeps_serving() -> None:
    """Found by this fuzzer: a \\ud800 escape in src, a version or a member name crashed the device."""
    for payload in (
        b'{"v":1,"src":"\\ud800","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":1}]}',
        b'{"v":1,"src":"x","cmds":[{"cmd":"/v1/SWUpdate.Update","id":1,"args":{"section":"config",'
        b'"sig":{"alg":"sha256","v":"' + b"a" * 64 + b'"},"size":5,"version":"\\udc00"}}]}',
        b'{"v":1,"src":"x","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":1,"args":{"\\ud800":1}}]}',
    ):
        out = fuzz_device.run_device([encode_frame(JsonFrame(payload)), encode_frame(JsonFrame(
            b'{"v":1,"src":"x","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":2}]}'))])
        answers = [json.loads(f.payload)["resp"][0] for f in out.frames if isinstance(f, JsonFrame)]
        assert answers[0]["id"] == 0 and answers[0]["status"] == 400 and "UTF-8" in answers[0]["status_msg"]
        assert answers[1] == {"id": 2, "status": 0, "resp": answers[1]["resp"]}
    # a surrogate pair is a character, and is served
    ok = env.parse_request('{"v":1,"src":"\\ud83d\\ude00","cmds":[{"cmd":"x","id":1}]}'.encode())
    assert ok.src == "\U0001F600"
