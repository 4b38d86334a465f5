"""Port discovery and matching (VID:PID, serial numbers), and DTR/RTS reset sequences."""

from __future__ import annotations

import errno
import json
import os
import tty

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from uartupdate.host import ports as ports_mod
from uartupdate.host import reset as reset_mod
from uartupdate.host.errors import LinkError, UsageError
from uartupdate.host.ports import PortInfo, is_filter, list_ports, match_ports, resolve_port
from uartupdate.host.reset import Step, parse_sequence, run_sequence


def usb(device: str, vid: int, pid: int, serial_number: str, product: str = "USB UART") -> ListPortInfo:
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.serial_number, p.product, p.manufacturer = vid, pid, serial_number, product, "ACME"
    p.location = "1-1.2:1.0"
    p.apply_usb_info()
    return p


FAKE = [
    usb("/dev/ttyUSB1", 0x0403, 0x6001, "A10KZP9Q", "FT232R USB UART"),
    usb("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001", "CP2102 USB to UART Bridge Controller"),
    usb("/dev/ttyACM0", 0x0D28, 0x0204, "9900000037024e450034200b0000004e0000000097969901", "BBC micro:bit CMSIS-DAP"),
    usb("/dev/ttyACM1", 0x0D28, 0x0204, "9900000037024e450034200b0000004e0000000097969902", "BBC micro:bit CMSIS-DAP"),
]


@pytest.fixture
def fake_ports(monkeypatch) -> list[PortInfo]:
    from serial.tools import list_ports as lp

    monkeypatch.setattr(lp, "comports", lambda include_links=False: list(FAKE))
    return list_ports()


# ---------------------------------------------------------------- listing and matching


def test_list_ports_sorted_with_usb_identity(fake_ports) -> None:
    assert [p.device for p in fake_ports] == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0", "/dev/ttyUSB1"]
    ftdi = fake_ports[3]
    assert ftdi.vid_pid == "0403:6001" and ftdi.serial_number == "A10KZP9Q"
    assert ftdi.description == "FT232R USB UART"
    assert ftdi.as_dict()["vid_pid"] == "0403:6001"


def test_path_and_url_are_not_filters(tmp_path) -> None:
    for spec in ("/dev/ttyUSB0", "COM3", "com12", "socket://localhost:7000", "rfc2217://h:1", "emu://", "./port"):
        assert not is_filter(spec), spec
    for spec in ("0403:6001", "0x0403:0x6001", "vid=0403", "serial=A10KZP9Q", "A10KZP9Q"):
        assert is_filter(spec), spec


def test_match_by_vid_pid(fake_ports) -> None:
    assert [p.device for p in match_ports("0403:6001", fake_ports)] == ["/dev/ttyUSB1"]
    assert [p.device for p in match_ports("10c4:ea60", fake_ports)] == ["/dev/ttyUSB0"]
    assert [p.device for p in match_ports("0D28:0204", fake_ports)] == ["/dev/ttyACM0", "/dev/ttyACM1"]
    assert match_ports("1234:5678", fake_ports) == []


def test_match_by_serial_number_and_keys(fake_ports) -> None:
    assert [p.device for p in match_ports("A10KZP9Q", fake_ports)] == ["/dev/ttyUSB1"]
    assert [p.device for p in match_ports("serial=0001", fake_ports)] == ["/dev/ttyUSB0"]
    # a unique prefix of a long serial number is enough; an ambiguous one is not
    assert len(match_ports("99000000", fake_ports)) == 2
    assert [p.device for p in match_ports("vid=0x0d28,serial=9900000037024e450034200b0000004e0000000097969902",
                                          fake_ports)] == ["/dev/ttyACM1"]
    assert [p.device for p in match_ports("name=CP2102", fake_ports)] == ["/dev/ttyUSB0"]
    assert match_ports("serial=A10K", fake_ports) == []  # key=value serials are exact


def test_resolve_port(fake_ports) -> None:
    assert resolve_port("/dev/ttyUSB7", fake_ports) == "/dev/ttyUSB7"  # a path is used as it is
    assert resolve_port("0403:6001", fake_ports) == "/dev/ttyUSB1"
    assert resolve_port("A10KZP9Q", fake_ports) == "/dev/ttyUSB1"
    with pytest.raises(UsageError, match="matches 2 ports: /dev/ttyACM0 .*, /dev/ttyACM1"):
        resolve_port("0d28:0204", fake_ports)
    with pytest.raises(LinkError, match="no serial port matches 1234:5678"):
        resolve_port("1234:5678", fake_ports)
    with pytest.raises(LinkError, match="no such port"):
        resolve_port("NOPE-NOT-HERE", fake_ports)
    with pytest.raises(UsageError, match="bad port filter"):
        resolve_port("colour=blue", fake_ports)
    with pytest.raises(UsageError, match="not a hexadecimal USB id"):
        resolve_port("vid=xyz", fake_ports)


def test_format_ports(fake_ports) -> None:
    lines = ports_mod.format_ports(fake_ports).splitlines()
    assert lines[0].split() == ["DEVICE", "DESCRIPTION", "VID:PID", "SERIAL"]
    assert lines[4].startswith("/dev/ttyUSB1") and "0403:6001" in lines[4] and lines[4].endswith("A10KZP9Q")


def test_cli_ports_lists_whatever_this_host_has(run_cli) -> None:
    proc = run_cli("ports", "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert isinstance(found, list)
    for p in found:
        assert set(p) == {"device", "description", "vid_pid", "serial_number", "manufacturer", "location"}
    assert run_cli("ports").stdout.splitlines()[0].split() == ["DEVICE", "DESCRIPTION", "VID:PID", "SERIAL"]


def test_cli_port_filter_without_a_match_is_a_link_error(run_cli) -> None:
    proc = run_cli("list", "--port", "ffff:fffe", "--json")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "ffff:fffe" in proc.stderr
    assert json.loads(proc.stdout) == {"ok": False, "exit": 3, "error": proc.stderr.strip().removeprefix("uartupdate: ")}


# ---------------------------------------------------------------- reset sequences


def test_parse_named_and_custom_sequences() -> None:
    assert parse_sequence("no-reset") == []
    assert [str(s) for s in parse_sequence("default-reset")] == ["D0", "R1", "W0.1", "D1", "R0", "W0.05", "D0"]
    assert [str(s) for s in parse_sequence("hard-reset")] == ["R1", "W0.1", "R0"]
    assert parse_sequence("D0|R1|W0.1|D1|R0") == [
        Step("D", dtr=False), Step("R", rts=True), Step("W", seconds=0.1), Step("D", dtr=True), Step("R", rts=False)]
    assert parse_sequence(" u1,0 | w.5 ") == [Step("U", dtr=True, rts=False), Step("W", seconds=0.5)]


@pytest.mark.parametrize("bad", ["D2", "X1", "W", "U1", "D0|Q", "W61", "default"])
def test_bad_sequences_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="bad reset step"):
        parse_sequence(bad)


class RecordingPort:
    """A port with control lines that records every change and wait (against a fake clock)."""

    def __init__(self) -> None:
        self.port = "/dev/ttyFAKE"
        self.log: list[tuple[str, object]] = []
        self._dtr = self._rts = True

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = value
        self.log.append(("dtr", value))

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = value
        self.log.append(("rts", value))


def test_default_reset_plays_the_esp_pulse() -> None:
    port = RecordingPort()
    assert run_sequence(port, "default-reset", sleep=lambda s: port.log.append(("wait", s)))
    assert port.log == [("dtr", False), ("rts", True), ("wait", 0.1), ("dtr", True), ("rts", False),
                        ("wait", 0.05), ("dtr", False)]


def test_u_step_sets_both_lines_without_a_fd() -> None:
    port = RecordingPort()
    run_sequence(port, "U0,1", sleep=lambda s: None)
    assert port.log == [("dtr", False), ("rts", True)]


def test_a_pty_has_no_control_lines_and_is_told_once(monkeypatch) -> None:
    monkeypatch.setattr(reset_mod, "_warned", set())
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        path = os.ttyname(slave)
        notes: list[str] = []
        with serial.Serial(path, 115200) as port:
            slept: list[float] = []
            assert run_sequence(port, "default-reset", label="--before", warn=notes.append, sleep=slept.append) is False
            assert slept == []  # gave up at the first step: no waiting for nothing
            assert run_sequence(port, "hard-reset", label="--after", warn=notes.append) is False
            assert run_sequence(port, "U1,1", warn=notes.append) is False
        assert notes == [f"{path} has no modem control lines (DTR/RTS): --before sequence skipped"]
    finally:
        os.close(slave)
        os.close(master)


def test_emu_url_has_no_control_lines(monkeypatch) -> None:
    monkeypatch.setattr(reset_mod, "_warned", set())
    notes: list[str] = []
    with serial.serial_for_url("emu://") as port:
        assert run_sequence(port, "D0|R1", warn=notes.append) is False
    assert len(notes) == 1


def test_other_failures_are_not_hidden() -> None:
    class Broken:
        port = "/dev/ttyBROKEN"

        @property
        def dtr(self) -> bool:
            return True

        @dtr.setter
        def dtr(self, value: bool) -> None:
            raise OSError(errno.EBADF, "bad file descriptor")  # not a port without lines: a real failure

    with pytest.raises(OSError):
        run_sequence(Broken(), "D0")


def test_cli_before_on_a_pty_notes_once_and_succeeds(emulator, run_cli) -> None:
    proc = run_cli("list", "--port", emulator.port, "--before", "default-reset", "--after", "hard-reset", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["section"] == "bootloader"
    notes = proc.stderr.splitlines()
    assert notes == [f"uartupdate: note: {emulator.port} has no modem control lines (DTR/RTS): --before sequence skipped"]


def test_cli_bad_sequence_is_a_usage_error(run_cli) -> None:
    proc = run_cli("list", "--port", "/dev/null", "--before", "D0|Z9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad reset step 'Z9'" in proc.stderr
