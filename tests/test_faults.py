"""A bad line on purpose: the fault model, and the host and device surviving it.

emu:// (in process) and `uartupdate emulate` (a real PTY in a subprocess) with seeded bit
errors, lost bytes, garbage bursts, stalls and unplugs. Whatever happens, the flash holds
either the whole new image or what it held before, and a failed update resumes.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import tty
import urllib.parse
from pathlib import Path

import pytest
import serial

from uartupdate.core.transfer import Sender
from uartupdate.emulator import make_device
from uartupdate.emulator.faults import FaultConfig, LinkFaults
from uartupdate.emulator.profile import load_profile
from uartupdate.host.client import Client
from uartupdate.host.errors import LinkError, LinkTimeout

FW = load_profile().section("firmware")
assert FW is not None
FAST = 921600  # the host's retransmission timer scales with the wire time it assumes


def emu(flash: Path, **faults: object) -> str:
    return "emu://?" + urllib.parse.urlencode({"flash": str(flash), **faults})


def firmware(flash: Path, size: int) -> bytes:
    dev = make_device(flash=flash)
    try:
        return dev.flash.read(FW.offset, size)  # type: ignore[union-attr]
    finally:
        dev.flash.close()


def random_image(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


# ---------------------------------------------------------------- the fault model


def _through(faults: LinkFaults, data: bytes, step: int, now: float = 0.0) -> bytes:
    return b"".join(p for i in range(0, len(data), step) for _, p in faults.host_to_device(data[i : i + step], now))


def test_faults_are_replayed_by_their_seed_however_the_bytes_are_cut() -> None:
    data = random.Random(1).randbytes(300_000)
    config = FaultConfig(ber=1e-4, drop_rate=1e-4, garbage_rate=1e-4, seed=7)
    outs = {_through(LinkFaults(config), data, step) for step in (1, 97, 4096, len(data))}
    assert len(outs) == 1
    other = _through(LinkFaults(FaultConfig(ber=1e-4, drop_rate=1e-4, garbage_rate=1e-4, seed=8)), data, 4096)
    assert other != outs.pop()


def test_bit_errors_flip_bits_at_about_the_rate() -> None:
    data = bytes(1 << 20)
    faults = LinkFaults(FaultConfig(ber=1e-4, seed=3))
    out = _through(faults, data, 65536)
    assert len(out) == len(data)  # flips never add or remove bytes
    flipped = sum(bin(b).count("1") for b in out)
    assert flipped == faults.to_device.stats.flipped_bits
    assert 600 < flipped < 1100  # 8.4 M bits x 1e-4 = 839 expected


def test_drops_and_garbage_change_the_length() -> None:
    data = bytes(range(256)) * 4096
    dropped = LinkFaults(FaultConfig(drop_rate=1e-3, seed=1))
    out = _through(dropped, data, 1000)
    assert len(out) == len(data) - dropped.to_device.stats.dropped_bytes
    assert 700 < dropped.to_device.stats.dropped_bytes < 1400
    noisy = LinkFaults(FaultConfig(garbage_rate=1e-4, garbage_len=8, seed=1))
    out = _through(noisy, data, 1000)
    stats = noisy.to_device.stats
    assert len(out) == len(data) + stats.garbage_bytes
    assert stats.garbage_bursts <= stats.garbage_bytes <= 8 * stats.garbage_bursts
    assert 50 < stats.garbage_bursts < 170


def test_each_direction_has_its_own_noise() -> None:
    faults = LinkFaults(FaultConfig(ber=1e-3, seed=5))
    data = bytes(100_000)
    to_device = _through(faults, data, 1000)
    to_host = b"".join(p for _, p in faults.device_to_host(data, 0.0))
    assert to_device != to_host and to_device != data and to_host != data
    assert faults.to_host.stats.flipped_bits > 0


def test_a_stall_holds_back_what_follows_it() -> None:
    faults = LinkFaults(FaultConfig(stall_every=1000, stall_for=2.0))
    pieces = faults.host_to_device(bytes(1500), now=10.0)
    assert [(t, len(p)) for t, p in pieces] == [(10.0, 1000), (12.0, 500)]
    assert faults.host_to_device(b"x", now=11.0) == [(12.0, b"x")]  # still stalled
    assert faults.device_to_host(b"y", now=11.5) == [(12.0, b"y")]  # both ways
    assert faults.host_to_device(b"z", now=12.5) == [(12.5, b"z")]
    assert faults.stalls == 1


def test_an_unplug_loses_everything_until_the_cable_is_back() -> None:
    faults = LinkFaults(FaultConfig(unplug_every=100, unplug_for=1.0))
    assert faults.host_to_device(bytes(150), now=5.0) == [(5.0, bytes(100))]
    assert faults.unplugs == 1 and faults.unplugged(5.5) and not faults.unplugged(6.0)
    assert faults.device_to_host(b"answer", now=5.5) == []
    assert faults.to_device.stats.unplugged_bytes == 50
    assert faults.host_to_device(b"later", now=6.5) == [(6.5, b"later")]


@pytest.mark.parametrize(
    "query, problem",
    [({"ber": "2"}, "ber"), ({"drop-rate": "-1"}, "drop_rate"), ({"seed": "x"}, "seed"), ({"garbage-len": "0"}, "garbage_len")],
)
def test_bad_fault_settings_are_refused(query, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        FaultConfig.from_query(query)


def test_fault_settings_from_a_url_query() -> None:
    q = urllib.parse.parse_qs("ber=1e-5&drop-rate=1e-4&garbage_rate=1e-6&stall-every=1000&stall-ms=250&seed=7&flash=x")
    c = FaultConfig.from_query(q)
    assert (c.ber, c.drop_rate, c.garbage_rate, c.stall_every, c.stall_for, c.seed) == (1e-5, 1e-4, 1e-6, 1000, 0.25, 7)
    assert "BER 1e-05" in c.describe() and "seed 7" in c.describe()
    assert not FaultConfig().active and c.active


# ---------------------------------------------------------------- the adaptive sender


def run_sender(sender: Sender, p_loss: float = 0.0, noisy_until: int = 0, seed: int = 0) -> list[tuple[int, int]]:
    """Drive a Sender against an ideal device (SPEC 8.2) on a line that spoils each byte of a
    frame with probability `p_loss` while the frame's offset is below `noisy_until`."""
    rng = random.Random(seed)
    sent: list[tuple[int, int]] = []
    expected, since_ack, nak_sent, t = sender.acked, 0, False, 0.0
    for _ in range(100_000):
        if sender.done:
            break
        t += 0.01
        answers: list[tuple[int, bool]] = []
        for off, n in sender.poll(t):
            sent.append((off, n))
            if off < noisy_until and rng.random() > (1 - p_loss) ** (n + 14):
                continue  # lost on the line
            if off == expected:
                expected += n
                since_ack += n
                nak_sent = False
                if since_ack >= 4096 or expected == sender.size:
                    answers.append((expected, False))
                    since_ack = 0
            elif off > expected:
                if not nak_sent:
                    nak_sent = True
                    answers.append((expected, True))
                    since_ack = 0
            else:
                answers.append((expected, False))
                since_ack = 0
        for offset, nak in answers:
            sender.on_ack(offset, nak, t)
    assert sender.done
    return sent


def test_a_clean_line_keeps_the_devices_chunk_and_sends_no_probes() -> None:
    s = Sender(100_000, 0, 2048, 8192, 1.0, 0.0, min_chunk=128, min_retransmit=0.05)
    sent = run_sender(s)
    assert {n for _, n in sent[:-1]} == {2048} and s.stats.smallest_chunk == 2048
    assert s.stats.resent_frames == 0 and s.limit == 8192


def test_a_noisy_line_shrinks_the_chunk_and_a_clean_one_grows_it_back() -> None:
    s = Sender(3_000_000, 0, 2048, 8192, 1.0, 0.0, min_chunk=128, min_retransmit=0.05)
    sent = run_sender(s, p_loss=1e-3, noisy_until=300_000)  # as BER 1e-4: a 2 KiB frame is mostly lost
    sizes = [n for _, n in sent if n]
    assert s.stats.smallest_chunk <= 512 and s.limit == 8192
    assert s.stats.naks > 0
    assert sizes[-2] == 2048  # long after the noise stopped, back to the device's chunk
    assert all(n % 4 == 0 for n in sizes[:-1])  # SPEC 8.2
    assert all(off % 4 == 0 for off, _ in sent)


def test_after_going_back_the_gap_is_filled_twice_and_a_burst_ends_with_a_probe() -> None:
    s = Sender(50_000, 0, 2048, 8192, 1.0, 0.0, min_chunk=128, min_retransmit=0.05)
    s.poll(0.0)
    s.on_ack(2048, True, 0.01)  # the device lost 2048..4096
    out = s.poll(0.01)
    assert out[0] == out[1] and out[0][0] == 2048  # twice: the second copy is a duplicate, acknowledged
    assert out[-1][1] == 0 and out[-1][0] == s.next - 4  # the probe, just before the end of the burst
    assert s.stats.resent_frames >= 2


def test_the_retransmission_timeout_follows_the_round_trip_and_backs_off() -> None:
    s = Sender(1_000_000, 0, 2048, 8192, 0.5, 0.0, min_chunk=128, min_retransmit=0.02, rtt=0.004)
    assert s.retransmit_after == pytest.approx(0.02)  # 4 ms measured: the floor
    s.poll(0.0)
    s.poll(0.02)  # timed out: back off
    assert s.stats.timeouts == 1 and s.retransmit_after == pytest.approx(0.04)
    s.on_ack(2048, False, 0.03)  # the line works again
    assert s.retransmit_after == pytest.approx(0.02)
    fixed = Sender(10_000, 0, 1000, 4000, 1.0, 0.0)  # without min_retransmit: the fixed timer of SPEC 9
    fixed.poll(0.0)
    assert fixed.deadline() == 1.0


# ---------------------------------------------------------------- emu:// with faults


def test_one_mib_at_ber_1e5_and_drop_1e4_arrives_exactly(tmp_path) -> None:
    img = random_image(tmp_path / "fw.bin", 1 << 20, seed=11)
    with Client(emu(tmp_path / "flash.bin", ber=1e-5, **{"drop-rate": 1e-4}, seed=7), baud=FAST, timeout=2) as c:
        result = c.update("firmware", str(img), "2.0.0")
        assert c.port.faults.to_device.stats.flipped_bits > 0  # the line really was noisy
        assert c.port.faults.to_device.stats.dropped_bytes > 0
    assert firmware(tmp_path / "flash.bin", 1 << 20) == img.read_bytes()
    d = result.as_dict()
    assert d["retransmissions"] > 0 and d["naks"] > 0 and d["resent_bytes"] > 0
    assert d["device_crc_errors"] > 0 and d["device_frame_errors"] >= d["device_crc_errors"]
    for key in ("timeouts", "crc_errors", "frame_errors", "request_retries", "smallest_chunk"):
        assert isinstance(d[key], int)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_very_noisy_line_never_writes_wrong_bytes(tmp_path, seed: int) -> None:
    """BER 1e-4 and drop rate 1e-3: complete, or a clear resumable error; never wrong bytes."""
    flash = tmp_path / "flash.bin"
    img = random_image(tmp_path / "fw.bin", 32 * 1024, seed=seed)
    before = firmware(flash, 32 * 1024)
    try:
        with Client(emu(flash, ber=1e-4, **{"drop-rate": 1e-3}, seed=seed), baud=FAST, timeout=1) as c:
            c.update("firmware", str(img), "3.0.0")
        completed = True
    except LinkError as exc:
        completed = False
        assert "emu://" in str(exc) and "\n" not in str(exc)
    now = firmware(flash, 32 * 1024)
    assert now == (img.read_bytes() if completed else before)
    with Client(emu(flash), baud=FAST, timeout=2) as c:  # the cable is fixed: the same update ends it
        c.update("firmware", str(img), "3.0.0")
        assert {"section": "firmware", "version": "3.0.0", "writable": True} in c.list_sections()
    assert firmware(flash, 32 * 1024) == img.read_bytes()


def test_garbage_bursts_and_short_stalls_are_survived(tmp_path) -> None:
    img = random_image(tmp_path / "fw.bin", 200_000, seed=4)
    url = emu(tmp_path / "flash.bin", **{"garbage-rate": 2e-5, "garbage-len": 64, "stall-every": 50_000, "stall-ms": 150}, seed=9)
    with Client(url, baud=FAST, timeout=2) as c:
        c.update("firmware", str(img), "4.0.0")
        faults = c.port.faults
        assert faults.stalls >= 3 and faults.to_device.stats.garbage_bursts > 0
    assert firmware(tmp_path / "flash.bin", 200_000) == img.read_bytes()


def test_a_long_stall_is_one_clear_error_and_the_next_run_resumes(tmp_path) -> None:
    flash = tmp_path / "flash.bin"
    img = random_image(tmp_path / "fw.bin", 200_000, seed=5)
    with Client(emu(flash, **{"stall-every": 100_000, "stall-ms": 5000}), baud=FAST, timeout=0.5, retries=1) as c:
        with pytest.raises(LinkTimeout) as info:
            c.update("firmware", str(img), "5.0.0")
    msg = str(info.value)
    assert msg.startswith("emu://") and "no " in msg and "run the same update again to resume" in msg
    assert "\n" not in msg
    assert firmware(flash, 200_000) != img.read_bytes()
    with Client(emu(flash), baud=FAST, timeout=2) as c:
        result = c.update("firmware", str(img), "5.0.0")
    assert 0 < result.resumed_from < 200_000
    assert firmware(flash, 200_000) == img.read_bytes()


def test_an_unplugged_cable_is_a_clear_error_and_the_next_run_resumes(tmp_path) -> None:
    flash = tmp_path / "flash.bin"
    img = random_image(tmp_path / "fw.bin", 300_000, seed=6)
    before = firmware(flash, 300_000)
    with Client(emu(flash, **{"unplug-every": 150_000}), baud=FAST, timeout=2) as c:
        with pytest.raises(LinkError) as info:
            c.update("firmware", str(img), "6.0.0")
        assert c.port.faults.unplugs == 1
    assert "went away" in str(info.value) and "unplugged" in str(info.value)
    assert firmware(flash, 300_000) == before  # the running image is untouched
    with Client(emu(flash), baud=FAST, timeout=2) as c:  # plugged in again: the board powers up
        result = c.update("firmware", str(img), "6.0.0")
    assert result.resumed_from > 0
    assert firmware(flash, 300_000) == img.read_bytes()


class GarbageSerial(serial.serialutil.SerialBase):
    """A port on which the 'device' sends random bytes without end (a wrong baud rate)."""

    def open(self) -> None:
        self._rng = random.Random(1)
        self.is_open = True

    def _reconfigure_port(self, force_update: bool = False) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return 4096

    def read(self, size: int = 1) -> bytes:
        time.sleep(0.001)
        return self._rng.randbytes(size)

    def write(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        self.is_open = False


class SilentSerial(GarbageSerial):
    @property
    def in_waiting(self) -> int:
        return 0

    def read(self, size: int = 1) -> bytes:
        time.sleep(self._timeout or 0)
        return b""


def test_a_device_that_sends_endless_garbage_is_reported() -> None:
    port = GarbageSerial("garbage-port", timeout=0.02)
    started = time.monotonic()
    with Client(port, timeout=30) as c:
        with pytest.raises(LinkError) as info:
            c.list_sections()
    assert "garbage-port" in str(info.value) and "not frames" in str(info.value)
    assert "ListSections" in str(info.value)
    assert time.monotonic() - started < 30  # detected by volume, not by waiting out the timeout


def test_a_silent_device_is_one_clear_line_naming_the_port_and_what_was_awaited() -> None:
    with Client(SilentSerial("silent-port", timeout=0.02), timeout=0.2, retries=1) as c:
        with pytest.raises(LinkTimeout) as info:
            c.list_sections()
    msg = str(info.value)
    assert msg.startswith("silent-port: no answer to SWUpdate.ListSections after 2 tries of 0.2 s")
    assert "\n" not in msg


# ---------------------------------------------------------------- a real PTY


def start_emulator(flash: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    emu_proc = subprocess.Popen(
        [sys.executable, "-m", "uartupdate", "emulate", "--flash", str(flash), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    line = emu_proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("PORT "), line + emu_proc.stderr.read()  # type: ignore[union-attr]
    return emu_proc, line.split()[1]


def stop_emulator(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return err


def update_cli(port: str, image: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uartupdate", "update", "--port", port, "--baud", "3000000", "--section", "firmware",
         "--version", "7.0.0", *extra, str(image)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_pty_emulator_with_noise_update_completes_and_reports_retransmissions(tmp_path) -> None:
    flash = tmp_path / "flash.bin"
    img = random_image(tmp_path / "fw.bin", 256 * 1024, seed=8)
    proc, port = start_emulator(flash, "--ber", "1e-5", "--drop-rate", "1e-4", "--seed", "7")
    try:
        done = update_cli(port, img, "--json", "--timeout", "2")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["retransmissions"] > 0 and result["naks"] + result["timeouts"] > 0
        assert result["device_crc_errors"] is None  # a board on a PTY does not tell
        assert firmware(flash, 256 * 1024) == img.read_bytes()
        img2 = random_image(tmp_path / "fw2.bin", 256 * 1024, seed=10)
        plain = update_cli(port, img2, "--timeout", "2")
        assert plain.returncode == 0, plain.stderr
        assert "retransmissions" in plain.stdout and "NAKs" in plain.stdout
    finally:
        err = stop_emulator(proc)
    assert "line faults: BER 1e-05, drop rate 0.0001, seed 7" in err
    assert "bits flipped" in err and "device:" in err and "CRC" in err
    assert firmware(flash, 256 * 1024) == img2.read_bytes()


def test_pty_unplug_gives_one_clear_line_and_the_next_run_resumes(tmp_path) -> None:
    flash, link = tmp_path / "flash.bin", tmp_path / "board"
    img = random_image(tmp_path / "fw.bin", 400 * 1024, seed=9)
    before = firmware(flash, 400 * 1024)
    proc, first = start_emulator(flash, "--unplug-every", "300000", "--unplug-ms", "300", "--link", str(link))
    try:
        assert os.readlink(link) == first
        cut = update_cli(str(link), img, "--timeout", "2")
        assert cut.returncode == 3, cut.stdout + cut.stderr
        assert cut.stderr.count("\n") == 1 and "Traceback" not in cut.stderr
        assert "went away" in cut.stderr and str(link) in cut.stderr
        second = proc.stdout.readline().split()[1]  # type: ignore[union-attr]
        assert os.readlink(link) == second  # the adapter came back (maybe under another name)
        assert firmware(flash, 400 * 1024) == before
        done = update_cli(str(link), img, "--timeout", "2", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["resumed_from"] > 0
    finally:
        stop_emulator(proc)
    assert not link.exists()
    assert firmware(flash, 400 * 1024) == img.read_bytes()


def _pty_with(writer) -> tuple[str, threading.Event, list[int]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            select.select([master], [], [], 0.01)
            try:
                os.read(master, 65536) if select.select([master], [], [], 0)[0] else None
                writer(master)
            except OSError:
                return

    threading.Thread(target=run, daemon=True).start()
    return os.ttyname(slave), stop, [master, slave]


@pytest.mark.parametrize("kind", ["garbage", "silent"])
def test_cli_against_a_board_that_babbles_or_says_nothing(kind: str) -> None:
    rng = random.Random(2)

    def babble(fd: int) -> None:
        if kind == "garbage":
            os.write(fd, rng.randbytes(4096))

    path, stop, fds = _pty_with(babble)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "uartupdate", "list", "--port", path, "--baud", "3000000", "--timeout", "1",
             "--retries", "1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
    finally:
        stop.set()
        time.sleep(0.05)
        for fd in fds:
            os.close(fd)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert path in done.stderr
    if kind == "garbage":
        assert "not frames" in done.stderr
    else:
        assert "no answer to SWUpdate.ListSections" in done.stderr


def test_emulate_refuses_a_bad_fault_setting(run_cli) -> None:
    done = run_cli("emulate", "--ber", "2")
    assert done.returncode == 2 and "ber" in done.stderr and "Traceback" not in done.stderr
