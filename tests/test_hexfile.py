"""Intel HEX images: parsing, checks, conversion to a section's raw bytes, and the CLI on a PTY."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from uartupdate.host.errors import ImageError
from uartupdate.host.hexfile import MAX_GAP, looks_like_hex, read_hex, to_binary
from uartupdate.host.image import open_image

DATA = Path(__file__).parent / "data"
MICROPYTHON = DATA / "microbit-micropython-1.0.1.hex"
#: SHA-256 of GNU objcopy's binary of the same hex without its UICR records (tests/data/README.md).
MICROPYTHON_BIN_SHA256 = "6630ef657c55afb6c5a63d04458d7b7d3f12932509246cc2d98cda670696b323"


def record(rtype: int, offset: int, data: bytes) -> str:
    body = bytes([len(data), offset >> 8, offset & 0xFF, rtype]) + data
    return ":" + (body + bytes([(-sum(body)) & 0xFF])).hex().upper()


def write_hex(path: Path, records: list[str], eof: bool = True) -> Path:
    path.write_text("\n".join(records + ([":00000001FF"] if eof else [])) + "\n")
    return path


def data_records(address: int, data: bytes, per: int = 16) -> list[str]:
    """Data records for `data` at a 32-bit address, with 04 records where the upper half changes."""
    out, upper = [], None
    for pos in range(0, len(data), per):
        a = address + pos
        if a >> 16 != upper:
            upper = a >> 16
            out.append(record(4, 0, upper.to_bytes(2, "big")))
        out.append(record(0, a & 0xFFFF, data[pos : pos + per]))
    return out


# ---------------------------------------------------------------- the parser


def test_record_helper_matches_a_known_line() -> None:
    assert record(1, 0, b"") == ":00000001FF"
    assert record(4, 0, b"\x00\x00") == ":020000040000FA"


def test_contiguous_image(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    hx = read_hex(write_hex(tmp_path / "a.hex", data_records(0x08000000, data)))
    assert [(s.start, s.end) for s in hx.segments] == [(0x08000000, 0x08000000 + len(data))]
    b = to_binary(hx)
    assert b.base == 0x08000000 and b.size == len(data)
    assert b.path.read_bytes() == data


def test_adjacent_records_merge_into_one_segment(tmp_path: Path) -> None:
    recs = data_records(0x1010, b"\x02" * 16) + data_records(0x1000, b"\x01" * 16) + data_records(0x1020, b"\x03" * 3)
    hx = read_hex(write_hex(tmp_path / "m.hex", recs))
    assert [(s.start, s.end) for s in hx.segments] == [(0x1000, 0x1023)]
    assert to_binary(hx).path.read_bytes() == b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 3


def test_out_of_order_records_and_gap(tmp_path: Path) -> None:
    recs = data_records(0x1100, b"\x02" * 8) + data_records(0x1000, b"\x01" * 32)
    hx = read_hex(write_hex(tmp_path / "g.hex", recs))
    assert [(s.start, s.end) for s in hx.segments] == [(0x1000, 0x1020), (0x1100, 0x1108)]
    b = to_binary(hx)
    assert b.path.read_bytes() == b"\x01" * 32 + b"\xff" * (0x1100 - 0x1020) + b"\x02" * 8


def test_overlapping_records_are_refused(tmp_path: Path) -> None:
    recs = data_records(0x1000, b"\x01" * 32) + data_records(0x1010, b"\x03" * 4)
    with pytest.raises(ImageError, match="line 5: data at 0x1010 overlaps"):
        read_hex(write_hex(tmp_path / "o.hex", recs))


def test_extended_segment_address_and_start_records(tmp_path: Path) -> None:
    recs = [record(2, 0, b"\x10\x00"), record(0, 0x0010, b"\xAA\xBB"), record(3, 0, b"\x12\x34\x00\x10")]
    hx = read_hex(write_hex(tmp_path / "s.hex", recs))
    assert [(s.start, s.end) for s in hx.segments] == [(0x10010, 0x10012)]
    assert hx.start_address == 0x12340 + 0x10
    recs = [record(0, 0, b"\x01\x02\x03\x04"), record(5, 0, b"\x00\x01\x8E\x21")]
    assert read_hex(write_hex(tmp_path / "l.hex", recs)).start_address == 0x18E21


def test_lower_case_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = "\r\n".join([record(0, 0, b"\xde\xad\xbe\xef").lower(), "", ":00000001ff"]) + "\r\n"
    (tmp_path / "c.hex").write_text(text)
    assert to_binary(read_hex(tmp_path / "c.hex")).path.read_bytes() == b"\xde\xad\xbe\xef"


@pytest.mark.parametrize(
    "line, message",
    [
        (":0400000001020304F1", "checksum 0xF1 is wrong (expected 0xF2)"),
        (":0500000001020304F2", "says 5 data bytes but holds 4"),
        (":04000000010203", "says 4 data bytes but holds 2"),
        (":0400000001020304G2", "bad hex digits"),
        ("0400000001020304F2", "does not start with ':'"),
        (":00000007F9", "unknown record type 0x07"),
        (":0100000401FA", "a type 04 record holds 2 bytes, not 1"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(tmp_path: Path, line: str, message: str) -> None:
    path = write_hex(tmp_path / "bad.hex", [record(0, 0, b"\x00" * 4), line])
    with pytest.raises(ImageError) as info:
        read_hex(path)
    assert "line 2" in str(info.value) and message in str(info.value)


def test_missing_eof_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="without an end-of-file record"):
        read_hex(write_hex(tmp_path / "t.hex", data_records(0, b"\x01" * 64), eof=False))


def test_data_after_eof_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "after.hex"
    path.write_text(":00000001FF\n" + record(0, 0, b"\x01") + "\n")
    with pytest.raises(ImageError, match="follows the end-of-file record"):
        read_hex(path)


def test_no_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no data records"):
        read_hex(write_hex(tmp_path / "e.hex", []))


def test_base_must_match_the_section(tmp_path: Path) -> None:
    hx = read_hex(write_hex(tmp_path / "b.hex", data_records(0x08004000, b"\x01" * 64)))
    assert to_binary(hx, base=0x08004000).base == 0x08004000
    with pytest.raises(ImageError, match="starts at 0x8004000, above the section's base address 0x8000000"):
        to_binary(hx, base=0x08000000)
    with pytest.raises(ImageError, match="below the section's base address 0x8008000"):
        to_binary(hx, base=0x08008000)


def test_far_segments_need_the_section_size(tmp_path: Path) -> None:
    recs = data_records(0x0, b"\x01" * 64) + data_records(0x10001000, b"\x02" * 8)
    hx = read_hex(write_hex(tmp_path / "far.hex", recs))
    with pytest.raises(ImageError, match="--section-size"):
        to_binary(hx)
    b = to_binary(hx, base=0, size=0x40000)
    assert b.size == 64 and [(s.start, s.end) for s in b.skipped] == [(0x10001000, 0x10001008)]
    near = read_hex(write_hex(tmp_path / "near.hex", data_records(0, b"\x01") + data_records(MAX_GAP + 1, b"\x02")))
    assert to_binary(near).size == MAX_GAP + 2  # a gap of exactly MAX_GAP is filled


def test_data_running_past_the_section_is_refused(tmp_path: Path) -> None:
    hx = read_hex(write_hex(tmp_path / "long.hex", data_records(0x0, b"\x01" * 64)))
    with pytest.raises(ImageError, match="runs past the end of the section"):
        to_binary(hx, base=0, size=32)


def test_looks_like_hex() -> None:
    assert looks_like_hex(b":020000040000FA\n:10000000")
    assert looks_like_hex(b"\xef\xbb\xbf:00000001FF\r\n")
    assert not looks_like_hex(b":020000040000FB\n")  # bad checksum: not taken for hex
    assert not looks_like_hex(b"\x7fELF\x02\x01")
    assert not looks_like_hex(b"")


# ---------------------------------------------------------------- a real image made by others


def test_micropython_hex_parses_as_published() -> None:
    assert hashlib.sha256(MICROPYTHON.read_bytes()).hexdigest() == (
        "945ce1ceca094802afc8397936bbdf42e1c1f4f95763b70e9b8d0d5470555f05"
    )
    hx = read_hex(MICROPYTHON)
    assert hx.records == 14485
    assert [(s.start, s.end) for s in hx.segments] == [(0x0, 0x388B8), (0x100010C0, 0x100010DC)]
    assert hx.start_address == 0x00018E21


def test_micropython_hex_to_binary_matches_objcopy() -> None:
    hx = read_hex(MICROPYTHON)
    with pytest.raises(ImageError, match="268208136 bytes apart"):
        to_binary(hx)
    b = to_binary(hx, base=0x0, size=256 * 1024)  # the nRF51822's 256 KiB of code flash
    assert b.size == 0x388B8
    assert hashlib.sha256(b.path.read_bytes()).hexdigest() == MICROPYTHON_BIN_SHA256
    assert [str(s) for s in b.skipped] == ["0x100010c0..0x100010dc (28 bytes)"]


# ---------------------------------------------------------------- detection by content


def test_open_image_detects_hex_by_content_not_name(tmp_path: Path) -> None:
    data = bytes(range(200))
    path = write_hex(tmp_path / "firmware.bin", data_records(0x4000, data))  # hex text named .bin
    img = open_image(path)
    assert img.size == len(data) and img.base == 0x4000
    assert img.sha256 == hashlib.sha256(data).digest()
    assert "Intel HEX" in (img.note or "")
    raw = tmp_path / "raw.hex"  # raw bytes named .hex
    raw.write_bytes(b"\x00\x01\x02\x03" * 10)
    img = open_image(raw)
    assert img.size == 40 and img.base is None and "raw bytes" in (img.note or "")


def test_open_image_with_a_damaged_hex_names_the_line(tmp_path: Path) -> None:
    path = write_hex(tmp_path / "bad.hex", data_records(0, b"\x01" * 64))
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-2] + "00"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageError, match="line 3: checksum"):
        open_image(path)


def test_open_image_base_applies_to_hex_only(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\x01" * 10)
    with pytest.raises(ImageError, match="Intel HEX files only"):
        open_image(raw, base=0x1000)


# ---------------------------------------------------------------- through the CLI, on a PTY


def test_cli_updates_firmware_from_the_micropython_hex(emulator, run_cli) -> None:
    fw = emulator.profile.section("firmware")
    proc = run_cli("update", "--port", emulator.port, "-s", "firmware", "--version", "mpy-1.0.1",
                   "--section-size", "256k", "--json", str(MICROPYTHON))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["size"] == 0x388B8 and result["base"] == 0
    emulator.stop()
    with open(emulator.flash_path, "rb") as f:
        f.seek(fw.offset)
        on_flash = f.read(0x388B8)
    assert hashlib.sha256(on_flash).hexdigest() == MICROPYTHON_BIN_SHA256


def test_cli_refuses_a_hex_for_another_base(emulator, run_cli, tmp_path: Path) -> None:
    path = write_hex(tmp_path / "app.hex", data_records(0x08004000, b"\x01" * 64))
    proc = run_cli("update", "--port", emulator.port, "-s", "firmware", "--base", "0x08000000", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "0x8004000" in proc.stderr and "0x8000000" in proc.stderr
    proc = run_cli("update", "--port", emulator.port, "-s", "firmware", "--json", str(MICROPYTHON))
    assert proc.returncode == 2 and "--section-size" in proc.stderr
    assert json.loads(proc.stdout)["ok"] is False
