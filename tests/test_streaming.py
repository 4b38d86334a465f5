"""Streamed updates with resume through emu://, and the host's sans-I/O Sender."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from uartupdate.core.framing import DataFrame, Kind, cobs_decode, parse_body
from uartupdate.core.transfer import Sender
from uartupdate.emulator import protocol_emu
from uartupdate.emulator import make_device
from uartupdate.emulator.device import Device
from uartupdate.emulator.flash import NorFlash
from uartupdate.emulator.profile import load_profile, staging_header_size
from uartupdate.emulator.storage import Staging
from uartupdate.host.client import Client

PROFILE = load_profile()
FW = PROFILE.section("firmware")
SIZE = 200 * 1024
STOP_AT = 100 * 1024
STAGING_DATA = PROFILE.staging.offset + staging_header_size(PROFILE, PROFILE.staging.size)


class PowerCut(Exception):
    pass


def emu_url(path: Path) -> str:
    return "emu://?" + urllib.parse.urlencode({"flash": str(path)})


def stop_after(limit: int):
    seen: list[int] = []

    def progress(done: int, size: int) -> None:
        seen.append(done)
        if done >= limit:
            raise PowerCut(done)

    progress.seen = seen  # type: ignore[attr-defined]
    return progress


def interrupted_update(flash: Path, image: Path, version: str = "2.0", limit: int = STOP_AT) -> int:
    """Start streaming `image`, lose power once `limit` bytes are acknowledged; the acknowledged count."""
    with Client(emu_url(flash), timeout=2) as client:
        with pytest.raises(PowerCut) as info:
            client.update("firmware", str(image), version, progress=stop_after(limit))
    return info.value.args[0]


def firmware(flash: Path, length: int) -> bytes:
    dev = make_device(flash=flash)
    try:
        return dev.flash.read(FW.offset, length)
    finally:
        dev.flash.close()


def versions(flash: Path) -> dict[str, str]:
    with Client(emu_url(flash), timeout=2) as client:
        return {s["section"]: s["version"] for s in client.list_sections()}


def staged(flash: Path, size: int) -> tuple[tuple[bytes, int, str] | None, int]:
    f = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, flash)
    try:
        st = Staging(f, PROFILE)
        return st.read_header(), st.staged_bytes(size)
    finally:
        f.close()


def test_interrupted_update_resumes_after_a_power_cycle(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    data = img.read_bytes()
    acked = interrupted_update(flash, img)
    assert STOP_AT <= acked < SIZE
    header, held = staged(flash, SIZE)
    assert header is not None and header[1:] == (SIZE, "firmware")
    assert held > 0
    # nothing was installed: the running section and its version are untouched
    assert firmware(flash, SIZE) != data
    assert versions(flash)["firmware"] == "1234"

    with Client(emu_url(flash), timeout=2) as client:  # a new device on the same flash: a power cycle
        progress = []
        result = client.update("firmware", str(img), "2.0", progress=lambda d, s: progress.append(d))
        assert result.resumed_from > 0
        assert result.resumed_from == held
        assert result.resumed_from % PROFILE.sector_size == 0
        # the device may hold what was in flight when the host stopped: at most one window more
        assert result.resumed_from <= acked + PROFILE.chunk * PROFILE.buffers
        assert result.stats.bytes_sent == SIZE - result.resumed_from
        assert progress[0] > result.resumed_from and progress[-1] == SIZE
        assert client.list_sections()[2] == {"section": "firmware", "version": "2.0", "writable": True}
    assert firmware(flash, FW.size) == data + b"\xff" * (FW.size - SIZE)
    assert staged(flash, SIZE)[0] is None  # staging cleared after the install


def test_resume_twice(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    interrupted_update(flash, img, limit=50 * 1024)
    first = staged(flash, SIZE)[1]
    with Client(emu_url(flash), timeout=2) as client:
        with pytest.raises(PowerCut):
            client.update("firmware", str(img), "2.0", progress=stop_after(150 * 1024))
    second = staged(flash, SIZE)[1]
    assert 0 < first < second < SIZE
    with Client(emu_url(flash), timeout=2) as client:
        result = client.update("firmware", str(img), "2.0")
    assert result.resumed_from == second
    assert firmware(flash, SIZE) == img.read_bytes()


def test_different_image_after_an_interrupted_one_starts_over(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    first, second = image(SIZE), image(SIZE)
    interrupted_update(flash, first)
    assert staged(flash, SIZE)[1] > 0
    with Client(emu_url(flash), timeout=2) as client:
        result = client.update("firmware", str(second), "3.0")
        assert result.resumed_from == 0
        assert result.stats.bytes_sent == SIZE
        assert client.list_sections()[2]["version"] == "3.0"
    assert firmware(flash, SIZE) == second.read_bytes()


def test_same_image_with_another_version_starts_over(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    interrupted_update(flash, img, version="2.0")
    with Client(emu_url(flash), timeout=2) as client:
        result = client.update("firmware", str(img), "2.1")
        assert result.resumed_from == 0
    assert versions(flash)["firmware"] == "2.1"
    assert firmware(flash, SIZE) == img.read_bytes()


def test_no_resume_starts_over(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    interrupted_update(flash, img)
    assert staged(flash, SIZE)[1] > 0
    with Client(emu_url(flash), timeout=2) as client:
        result = client.update("firmware", str(img), "2.0", resume=False)
        assert result.resumed_from == 0
        assert result.stats.bytes_sent == SIZE
    assert firmware(flash, SIZE) == img.read_bytes()


def test_corrupted_staged_prefix_is_detected_and_the_transfer_restarts(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    data = img.read_bytes()
    interrupted_update(flash, img)
    header, held = staged(flash, SIZE)
    assert header is not None and held > 8192
    # the device would offer these bytes for a resume; spoil some of them behind its back
    with open(flash, "r+b") as f:
        f.seek(STAGING_DATA + 5000)
        original = f.read(16)
        f.seek(STAGING_DATA + 5000)
        f.write(bytes(b ^ 0xA5 for b in original))
    assert staged(flash, SIZE) == (header, held)  # the journal still claims the prefix is whole

    with Client(emu_url(flash), timeout=2) as client:
        dev: Device = client.port.device
        result = client.update("firmware", str(img), "2.0")
        assert result.resumed_from == 0
        assert result.stats.bytes_sent == SIZE
        assert client.list_sections()[2]["version"] == "2.0"
        assert dev.flash.read(FW.offset, SIZE) == data
    assert firmware(flash, SIZE) == data


def test_power_lost_after_staging_before_install(tmp_path, image, monkeypatch) -> None:
    """Staging is whole but the install never started: the same update again installs without resending."""
    flash = tmp_path / "flash.bin"
    img = image(SIZE)
    with Client(emu_url(flash), timeout=2) as client:
        dev: Device = client.port.device

        def save(meta) -> None:
            raise PowerCut(0)

        monkeypatch.setattr(dev.meta_store, "save", save)
        with pytest.raises(PowerCut):
            client.update("firmware", str(img), "2.0")
    assert staged(flash, SIZE)[1] == SIZE
    assert versions(flash)["firmware"] == "1234"
    assert firmware(flash, SIZE) != img.read_bytes()
    with Client(emu_url(flash), timeout=2) as client:
        result = client.update("firmware", str(img), "2.0")
        assert result.resumed_from == SIZE
        assert result.stats.bytes_sent == 0
    assert versions(flash)["firmware"] == "2.0"
    assert firmware(flash, SIZE) == img.read_bytes()


def test_repeated_update_of_the_installed_image(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    img = image(50_000)
    with Client(emu_url(flash), timeout=2) as client:
        assert client.update("firmware", str(img), "5").resumed_from == 0
        again = client.update("firmware", str(img), "5")  # as after a lost answer: answered, nothing resent
        assert again.stats.bytes_sent == 0 and again.wire_bytes_out < 1000
    assert firmware(flash, 50_000) == img.read_bytes()


def test_update_of_an_unaligned_image_size(tmp_path, image) -> None:
    flash = tmp_path / "flash.bin"
    for size in (1, 3, 2047, 2049, 4095, 4097, 8191):
        img = image(size)
        with Client(emu_url(flash), timeout=2) as client:
            client.update("config", str(img), f"s{size}")
            assert client.list_sections()[1]["version"] == f"s{size}"
        cfg = PROFILE.section("config")
        dev = make_device(flash=flash)
        try:
            assert dev.flash.read(cfg.offset, cfg.size) == img.read_bytes() + b"\xff" * (cfg.size - size)
        finally:
            dev.flash.close()


def test_update_filling_the_section_exactly(tmp_path, image) -> None:
    cfg = PROFILE.section("config")
    img = image(cfg.size)
    with Client(emu_url(tmp_path / "flash.bin"), timeout=2) as client:
        client.update("config", str(img), "full")
        assert client.port.device.flash.read(cfg.offset, cfg.size) == img.read_bytes()


class LossySerial(protocol_emu.Serial):
    """emu:// with a bad cable: every `drop_data`-th DATA frame to the device and every
    `drop_ack`-th ACK from it are lost."""

    drop_data = 0
    drop_ack = 0
    drop_once: frozenset[int] = frozenset()  # DATA offsets lost the first time they are sent

    def open(self) -> None:
        super().open()
        self.data_seen = self.data_lost = self.acks_seen = self.acks_lost = 0
        self.dropped_offsets: list[int] = []

    @staticmethod
    def _split(data: bytes) -> list[bytes]:
        parts = data.split(b"\x00")
        return [p + b"\x00" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])

    @staticmethod
    def _kind(piece: bytes) -> int | None:
        try:
            return cobs_decode(piece.rstrip(b"\x00"))[0]
        except (ValueError, IndexError):
            return None

    def write(self, data: bytes) -> int:
        kept = bytearray()
        for piece in self._split(bytes(data)):
            if self.drop_once and self._kind(piece) == Kind.DATA:
                frame = parse_body(cobs_decode(piece.rstrip(b"\x00")))
                if isinstance(frame, DataFrame) and frame.offset in self.drop_once - set(self.dropped_offsets):
                    self.dropped_offsets.append(frame.offset)
                    continue
            if self.drop_data and self._kind(piece) == Kind.DATA:
                self.data_seen += 1
                if self.data_seen % self.drop_data == 0:
                    self.data_lost += 1
                    continue
            kept += piece
        before = len(self._rx)
        super().write(bytes(kept))
        replies, self._rx[before:] = bytes(self._rx[before:]), b""
        for piece in self._split(replies):
            if self.drop_ack and self._kind(piece) == Kind.ACK:
                self.acks_seen += 1
                if self.acks_seen % self.drop_ack == 0:
                    self.acks_lost += 1
                    continue
            self._rx += piece
        return len(data)


def lossy_port(flash: Path, baudrate: int, **drops) -> LossySerial:
    port = LossySerial.__new__(LossySerial)
    for name, value in drops.items():
        setattr(port, name, value)
    port.__init__(emu_url(flash), baudrate=baudrate, timeout=0)
    return port


@pytest.mark.parametrize("drop_data, drop_ack", [(7, 0), (0, 2), (13, 3)])
def test_update_over_a_lossy_line(tmp_path, image, drop_data: int, drop_ack: int) -> None:
    img = image(SIZE + 123)
    # a fast line: the host's retransmission timer scales with the time a window takes on the wire
    port = lossy_port(tmp_path / "flash.bin", 921600, drop_data=drop_data, drop_ack=drop_ack)
    with Client(port, timeout=5) as client:
        result = client.update("firmware", str(img), "lossy")
        dev: Device = port.device
        assert dev.flash.read(FW.offset, SIZE + 123) == img.read_bytes()
        assert client.list_sections()[2]["version"] == "lossy"
    if drop_data:
        assert port.data_lost > 0
        assert result.stats.resent_bytes > 0
        assert result.stats.naks + result.stats.timeouts > 0
    if drop_ack:
        assert port.acks_lost > 0


@pytest.mark.parametrize("where", ["middle", "last"])
def test_one_lost_chunk_is_resent(tmp_path, image, where: str) -> None:
    """One DATA frame lost. In the middle, the device's NAK (at the next chunk) reports it; the
    last chunk has no successor, so the host's retransmission timer (SPEC 9) must recover it."""
    size = 20 * 2048 + 100
    img = image(size)
    lost = 10 * 2048 if where == "middle" else 20 * 2048
    port = lossy_port(tmp_path / "flash.bin", 921600, drop_once=frozenset({lost}))
    with Client(port, timeout=5) as client:
        result = client.update("firmware", str(img), "one-lost")
        assert port.dropped_offsets == [lost]
        assert port.device.flash.read(FW.offset, size) == img.read_bytes()
        assert result.stats.resent_bytes > 0
        if where == "middle":
            assert result.stats.naks == 1 and result.stats.timeouts == 0
        else:
            assert result.stats.timeouts == 1


# ---------------------------------------------------------------- Sender


def test_sender_respects_the_window() -> None:
    s = Sender(size=20_000, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    assert s.poll(0.0) == [(0, 1000), (1000, 1000), (2000, 1000), (3000, 1000)]
    assert s.poll(0.1) == []  # the window is full
    s.on_ack(1000, False, 0.2)
    assert s.poll(0.2) == [(4000, 1000)]
    s.on_ack(3500, False, 0.3)  # an ack inside a chunk: only whole chunks fit the window
    assert s.poll(0.3) == [(5000, 1000), (6000, 1000)]
    assert s.next - s.acked <= s.window
    s.on_ack(3000, False, 0.4)  # an older ack changes nothing
    assert s.acked == 3500
    assert s.poll(0.4) == []
    assert s.stats.resent_bytes == 0 and s.stats.frames_sent == 7 and s.stats.bytes_sent == 7000


def test_sender_window_never_exceeded_over_a_whole_transfer() -> None:
    s = Sender(size=10_500, offset=0, chunk=1000, window=3000, retransmit_after=1.0, now=0.0)
    sent = []
    t = 0.0
    while not s.done:
        for off, n in s.poll(t):
            assert off + n <= s.acked + s.window
            sent.append((off, n))
        t += 0.01
        s.on_ack(min(s.acked + 700, s.next), False, t)
    assert sent[-1] == (10_000, 500)  # the last chunk is short
    assert sum(n for _, n in sent) == 10_500
    assert [o for o, _ in sent] == list(range(0, 10_500, 1000))


def test_sender_starts_at_the_resume_offset() -> None:
    s = Sender(size=10_000, offset=8192, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    assert s.poll(0.0) == [(8192, 1000), (9192, 808)]
    s.on_ack(10_000, False, 0.1)
    assert s.done and s.poll(0.2) == []
    assert s.stats.bytes_sent == 1808


def test_sender_nak_rewinds() -> None:
    s = Sender(size=20_000, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    s.poll(0.0)  # 0..4000 in flight
    s.on_ack(1000, True, 0.1)  # the device lost 1000..2000
    assert s.stats.naks == 1
    assert s.next == 1000
    assert s.poll(0.1) == [(1000, 1000), (2000, 1000), (3000, 1000), (4000, 1000)]
    assert s.stats.resent_bytes == 3000  # 1000..4000 went twice
    assert s.stats.bytes_sent == 8000
    assert s.stats.frames_sent == 8
    s.on_ack(5000, False, 0.2)
    assert s.poll(0.2)[0] == (5000, 1000)
    assert s.stats.resent_bytes == 3000


def test_sender_nak_without_progress_rewinds_to_the_ack() -> None:
    s = Sender(size=10_000, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    s.poll(0.0)
    s.on_ack(0, True, 0.1)
    assert s.poll(0.1) == [(0, 1000), (1000, 1000), (2000, 1000), (3000, 1000)]
    assert s.stats.resent_bytes == 4000 and s.stats.naks == 1 and s.stats.timeouts == 0


def test_sender_timeout_rewinds() -> None:
    s = Sender(size=20_000, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    s.poll(0.0)
    s.on_ack(2000, False, 0.5)  # progress at 0.5 restarts the clock
    assert s.poll(0.5) == [(4000, 1000), (5000, 1000)]
    assert s.deadline() == pytest.approx(1.5)
    assert s.poll(1.4) == []  # nothing heard since 0.5, not yet timed out
    assert s.stats.timeouts == 0
    chunks = s.poll(1.5)
    assert s.stats.timeouts == 1
    assert chunks == [(2000, 1000), (3000, 1000), (4000, 1000), (5000, 1000)]
    assert s.stats.resent_bytes == 4000
    assert s.deadline() == pytest.approx(2.5)
    assert s.poll(2.0) == []
    assert s.stats.timeouts == 1


def test_sender_no_timeout_when_nothing_is_in_flight() -> None:
    s = Sender(size=2000, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    s.poll(0.0)
    s.on_ack(2000, False, 0.1)
    assert s.done
    assert s.poll(100.0) == []
    assert s.stats.timeouts == 0 and s.stats.resent_bytes == 0


def test_sender_ack_beyond_the_size_is_clamped() -> None:
    s = Sender(size=1500, offset=0, chunk=1000, window=4000, retransmit_after=1.0, now=0.0)
    s.poll(0.0)
    s.on_ack(99_999, False, 0.1)
    assert s.acked == 1500 and s.done


@pytest.mark.parametrize("chunk, window", [(0, 4000), (1000, 999), (-1, 10)])
def test_sender_refuses_an_unusable_window(chunk: int, window: int) -> None:
    with pytest.raises(ValueError):
        Sender(size=1000, offset=0, chunk=chunk, window=window, retransmit_after=1.0, now=0.0)

