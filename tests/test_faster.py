"""Fewer bytes and a faster line: deflated streams, incremental (kept-block) updates, baud switching."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from pathlib import Path

import pytest

from uartupdate.core.envelope import dumps
from uartupdate.core.framing import FrameDecoder, JsonFrame, ReadyFrame, DataFrame, encode_frame
from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess

BLOCK = 4096


def compressible(size: int) -> bytes:
    """Firmware-like: repeated structure with some entropy."""
    words = [hashlib.sha256(str(i).encode()).digest()[:6] for i in range(200)]
    return b"".join(words[(i * 7) % 200] + bytes(10) for i in range(size // 16))[:size]


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def section_bytes(dev: Client, section: str, size: int) -> bytes:
    device = dev.port.device
    spec = device.profile.section(section)
    return device.flash.read(spec.slot_offset(device.running[section]), size)


def test_deflated_stream_is_smaller_and_lands_exactly(tmp_path: Path) -> None:
    data = compressible(512 * 1024)
    with Client(f"emu://?flash={tmp_path / 'f.bin'}") as dev:
        result = dev.update("firmware", write(tmp_path, "fw.bin", data), "2")
        assert section_bytes(dev, "firmware", len(data)) == data
        assert result.wire_bytes_out < len(zlib.compress(data, 9)) * 1.05 + 1024  # + the envelopes
        plain = dev.update("firmware", write(tmp_path, "fw2.bin", data[::-1]), "3", full=True, compress=False)
        assert plain.wire_bytes_out > len(data)
        assert section_bytes(dev, "firmware", len(data)) == data[::-1]


def test_random_data_is_sent_as_it_is(tmp_path: Path) -> None:
    """Deflate is used only when it pays: random data costs what it costs without it."""
    data = os.urandom(256 * 1024)
    with Client("emu://") as dev:
        auto = dev.update("firmware", write(tmp_path, "r.bin", data), "2", full=True)
        assert section_bytes(dev, "firmware", len(data)) == data
        off = dev.update("firmware", write(tmp_path, "r2.bin", data[::-1]), "3", full=True, compress=False)
    assert abs(auto.wire_bytes_out - off.wire_bytes_out) < 0.01 * off.wire_bytes_out
    assert auto.wire_bytes_out > len(data)  # a deflated stream of random bytes would be longer still, so: plain


@pytest.mark.parametrize("profile", ["default", "ab"])
def test_one_percent_of_blocks_changed_sends_about_one_percent(tmp_path: Path, profile: str) -> None:
    old = os.urandom(256 * BLOCK)
    new = bytearray(old)
    for index in (3, 100, 200):  # ~1% of 256 blocks
        new[index * BLOCK + 17] ^= 0x5A
    with Client(f"emu://?profile={profile}&flash={tmp_path / 'f.bin'}") as dev:
        full = dev.update("firmware", write(tmp_path, "old.bin", old), "1.1.0")
        if full.pending:
            dev.command("/v1/Sys.Reboot")
            dev.command("/v1/SWUpdate.Confirm", {"section": "firmware"})
        delta = dev.update("firmware", write(tmp_path, "new.bin", bytes(new)), "1.2.0")
        assert delta.wire_bytes_out <= 0.03 * full.wire_bytes_out, (delta.wire_bytes_out, full.wire_bytes_out)
        if delta.pending:  # dual slot: the kept blocks were copied from the running slot into the other one
            dev.command("/v1/Sys.Reboot")
            dev.command("/v1/SWUpdate.Confirm", {"section": "firmware"})
        assert section_bytes(dev, "firmware", len(new)) == bytes(new)
        forced_full = dev.update("firmware", write(tmp_path, "new2.bin", bytes(new)), "1.3.0", full=True)
        assert forced_full.wire_bytes_out > len(new) * 0.9


def test_interrupted_deflated_update_resumes_after_a_power_cycle(tmp_path: Path) -> None:
    noise = os.urandom(300 * 1024)
    data = b"".join(noise[i : i + 4] + bytes(4) for i in range(0, len(noise), 4))  # deflates to about half
    path = write(tmp_path, "fw.bin", data)
    url = f"emu://?flash={tmp_path / 'f.bin'}"

    class Cut(Exception):
        pass

    def cut(done: int, total: int) -> None:
        if done > total // 2:
            raise Cut

    with Client(url) as dev, pytest.raises(Cut):
        dev.update("firmware", path, "2", progress=cut)
    with Client(url) as dev:  # a new device on the same flash: a power cycle
        result = dev.update("firmware", path, "2")
        assert result.resumed_from > 0
        assert section_bytes(dev, "firmware", len(data)) == data


def _call(device, args: dict) -> tuple[dict | None, list]:  # type: ignore[no-untyped-def]
    out = device.receive(encode_frame(JsonFrame(dumps({"v": 1, "src": "t", "cmds": [
        {"cmd": "SWUpdate.Update", "id": 1, "args": args}]}))))
    frames = FrameDecoder(1 << 20).feed(out)
    answers = [f for f in frames if isinstance(f, JsonFrame)]
    import json

    return (json.loads(answers[0].payload)["resp"][0] if answers else None), frames


def test_bad_encoding_keep_map_or_deflate_stream_change_nothing(tmp_path: Path) -> None:
    with Client("emu://") as dev:
        device = dev.port.device
        before = device.flash.read(0, device.flash.size)
        sig = {"alg": "sha256", "v": hashlib.sha256(b"x" * 9000).hexdigest()}
        base = {"section": "firmware", "sig": sig, "size": 9000}
        for extra, status, text in (
            ({"encoding": "lz4"}, 415, "unsupported encoding"),
            ({"keep": base64.b64encode(b"\x00\x00").decode()}, 400, "one bit for each of the 3 blocks"),
            ({"keep": base64.b64encode(b"\x04").decode()}, 400, "last, partial block"),
            ({"keep": "***"}, 400, "not valid base64"),
        ):
            answer, _ = _call(device, {**base, **extra})
            assert answer is not None and answer["status"] == status and text in answer["status_msg"]
        assert device.flash.read(0, device.flash.size) == before

        running = device.flash.read(device.profile.section("firmware").offset, 9000)
        _, frames = _call(device, {**base, "encoding": "deflate"})
        ready = next(f for f in frames if isinstance(f, ReadyFrame))
        out = device.receive(encode_frame(DataFrame(ready.xfer, 0, b"\xff" * 64)))  # not deflate
        answer = [f for f in FrameDecoder(1 << 20).feed(out) if isinstance(f, JsonFrame)]
        assert answer and b'"status":400' in answer[0].payload and b"deflate stream is corrupt" in answer[0].payload
        assert device.flash.read(device.profile.section("firmware").offset, 9000) == running


def test_baud_switch_on_a_paced_line_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = EmulatorProcess(tmp_path / "f.bin", baud=115200, workdir=tmp_path)
    try:
        port = emu.start()
        data = os.urandom(64 * 1024)
        with Client(port, baud=115200) as dev:
            assert dev.switch_baud(921600)
            assert dev.port.baudrate == 921600
            dev.update("firmware", write(tmp_path, "fw.bin", data), "2")
        with Client(port, baud=115200, timeout=1) as dev:  # the first client put the line back at 115200
            assert {"section": "firmware", "version": "2", "writable": True} in dev.list_sections()
            assert not dev.switch_baud(57600)  # not offered: nothing changes
            # A host whose adapter cannot follow: its bytes reach the device at the wrong rate.
            monkeypatch.setattr(type(dev.port), "baudrate", property(lambda self: self._baudrate, lambda self, v: None))
            assert dev.switch_baud(921600) is False
            assert dev.list_sections()[2]["version"] == "2"  # both ends back at 115200
    finally:
        assert emu.stop() == 0
