"""NOR flash semantics of the emulator's NorFlash, and the metadata / staging layouts stored in it."""

from __future__ import annotations

import hashlib

import pytest

from uartupdate.emulator.flash import FlashError, NorFlash
from uartupdate.emulator.profile import load_profile, staging_header_size
from uartupdate.emulator.storage import JOURNAL_START, Metadata, MetadataStore, SectionState, SlotState, Staging

SIZE, SECTOR, ALIGN = 64 * 1024, 4096, 4


@pytest.fixture
def flash() -> NorFlash:
    f = NorFlash(SIZE, SECTOR, ALIGN)
    yield f
    f.close()


# ---------------------------------------------------------------- NorFlash


def test_fresh_flash_is_erased(flash: NorFlash, tmp_path) -> None:
    assert flash.read(0, SIZE) == b"\xff" * SIZE
    path = tmp_path / "new.bin"
    f = NorFlash(SIZE, SECTOR, ALIGN, path)
    try:
        assert f.read(0, SIZE) == b"\xff" * SIZE
    finally:
        f.close()
    assert path.read_bytes() == b"\xff" * SIZE


@pytest.mark.parametrize(
    "size, sector, align",
    [(0, 4096, 4), (4096 * 3 + 1, 4096, 4), (8192, 4096, 0), (8192, 4096, 3), (-4096, 4096, 4)],
)
def test_bad_geometry_is_refused(size: int, sector: int, align: int) -> None:
    with pytest.raises(ValueError):
        NorFlash(size, sector, align)


@pytest.mark.parametrize("offset, length", [(1, SECTOR), (SECTOR // 2, SECTOR), (0, SECTOR - 4), (0, 1), (SECTOR, 100)])
def test_erase_must_be_sector_aligned(flash: NorFlash, offset: int, length: int) -> None:
    flash.program(0, b"\x00" * SECTOR * 2)
    before = flash.read(0, SIZE)
    with pytest.raises(FlashError):
        flash.erase(offset, length)
    assert flash.read(0, SIZE) == before


def test_erase_sets_whole_sectors_to_ff(flash: NorFlash) -> None:
    flash.program(0, b"\x5a" * (SECTOR * 3))
    flash.erase(SECTOR, SECTOR)
    assert flash.read(0, SECTOR) == b"\x5a" * SECTOR
    assert flash.read(SECTOR, SECTOR) == b"\xff" * SECTOR
    assert flash.read(2 * SECTOR, SECTOR) == b"\x5a" * SECTOR
    flash.erase(0, 3 * SECTOR)
    assert flash.read(0, SIZE) == b"\xff" * SIZE


@pytest.mark.parametrize("offset, data", [(1, b"\x00" * 4), (2, b"\x00" * 4), (0, b"\x00" * 3), (4, b"\x00" * 5), (0, b"\x00")])
def test_program_must_be_aligned(flash: NorFlash, offset: int, data: bytes) -> None:
    with pytest.raises(FlashError):
        flash.program(offset, data)
    assert flash.read(0, SIZE) == b"\xff" * SIZE


def test_program_writes_erased_locations(flash: NorFlash) -> None:
    flash.program(8, b"abcdefgh")
    assert flash.read(0, 20) == b"\xff" * 8 + b"abcdefgh" + b"\xff" * 4
    flash.program(16, b"ijkl")  # the neighbouring erased unit can still be programmed
    assert flash.read(8, 12) == b"abcdefghijkl"


def test_programming_a_non_erased_unit_is_refused_and_changes_nothing(flash: NorFlash) -> None:
    flash.program(0, b"\x12\x34\x56\x78")
    before = flash.read(0, SIZE)
    # exactly the programmed unit
    with pytest.raises(FlashError):
        flash.program(0, b"\x00\x00\x00\x00")
    # a range that is partly erased: the erased part must stay erased too
    with pytest.raises(FlashError):
        flash.program(0, b"\x00" * 16)
    # even writing the same value again counts as programming a programmed unit
    with pytest.raises(FlashError):
        flash.program(0, b"\x12\x34\x56\x78")
    assert flash.read(0, SIZE) == before
    assert flash.read(4, 12) == b"\xff" * 12
    # after an erase it is programmable again
    flash.erase(0, SECTOR)
    flash.program(0, b"\x00" * 16)
    assert flash.read(0, 16) == b"\x00" * 16


@pytest.mark.parametrize(
    "op",
    [
        lambda f: f.read(SIZE - 4, 8),
        lambda f: f.read(SIZE, 1),
        lambda f: f.read(-4, 4),
        lambda f: f.erase(SIZE, SECTOR),
        lambda f: f.erase(SIZE - SECTOR, 2 * SECTOR),
        lambda f: f.erase(-SECTOR, SECTOR),
        lambda f: f.program(SIZE, b"\x00" * 4),
        lambda f: f.program(SIZE - 4, b"\x00" * 8),
        lambda f: f.program(-4, b"\x00" * 4),
    ],
)
def test_out_of_range_is_an_error(flash: NorFlash, op) -> None:
    ops = flash.operations
    with pytest.raises(FlashError):
        op(flash)
    assert flash.read(0, SIZE) == b"\xff" * SIZE
    assert flash.operations == ops


def test_last_bytes_are_reachable(flash: NorFlash) -> None:
    flash.program(SIZE - 4, b"END!")
    assert flash.read(SIZE - 4, 4) == b"END!"
    flash.erase(SIZE - SECTOR, SECTOR)
    assert flash.read(SIZE - 4, 4) == b"\xff" * 4


def test_data_survives_close_and_reopen(tmp_path) -> None:
    path = tmp_path / "flash.bin"
    f = NorFlash(SIZE, SECTOR, ALIGN, path)
    f.program(SECTOR, b"persist!" * 8)
    f.erase(0, SECTOR)
    f.close()
    f.close()  # closing twice is harmless
    raw = path.read_bytes()
    assert len(raw) == SIZE
    assert raw[SECTOR : SECTOR + 64] == b"persist!" * 8
    g = NorFlash(SIZE, SECTOR, ALIGN, path)
    try:
        assert g.read(SECTOR, 64) == b"persist!" * 8
        assert g.read(0, SECTOR) == b"\xff" * SECTOR
        with pytest.raises(FlashError):  # the reopened part remembers what is programmed
            g.program(SECTOR, b"\xff" * 4 + b"\x00" * 4)
        g.program(SECTOR + 64, b"more")
    finally:
        g.close()
    assert path.read_bytes()[SECTOR : SECTOR + 68] == b"persist!" * 8 + b"more"


def test_program_reaches_the_file_before_close(tmp_path) -> None:
    """A killed emulator keeps exactly what its flash held: writes go to the file at once."""
    path = tmp_path / "flash.bin"
    f = NorFlash(SIZE, SECTOR, ALIGN, path)
    try:
        f.program(0, b"live")
        f.flush()
        with open(path, "rb") as fh:
            assert fh.read(4) == b"live"
    finally:
        f.close()


@pytest.mark.parametrize("actual", [SIZE - SECTOR, SIZE + 1, 0])
def test_existing_file_of_another_size_is_an_error(tmp_path, actual: int) -> None:
    path = tmp_path / "flash.bin"
    path.write_bytes(b"\x00" * actual)
    with pytest.raises(FlashError):
        NorFlash(SIZE, SECTOR, ALIGN, path)
    assert path.read_bytes() == b"\x00" * actual  # not resized or overwritten


def test_operations_counter(flash: NorFlash) -> None:
    assert flash.operations == 0
    flash.read(0, SIZE)
    assert flash.operations == 0
    flash.erase(0, 3 * SECTOR)
    assert flash.operations == 3  # one per sector erased
    flash.program(0, b"\x00" * 1024)
    assert flash.operations == 4  # one per program call
    flash.program(1024, b"\x00" * 4)
    assert flash.operations == 5
    with pytest.raises(FlashError):
        flash.program(0, b"\x00" * 4)
    with pytest.raises(FlashError):
        flash.erase(1, SECTOR)
    assert flash.operations == 5  # refused operations did nothing


def test_busy_time_is_modelled() -> None:
    f = NorFlash(SIZE, SECTOR, ALIGN, erase_seconds_per_sector=0.05, program_seconds_per_byte=1e-6)
    try:
        f.erase(0, 2 * SECTOR)
        f.program(0, b"\x00" * 1000)
        assert f.take_busy_seconds() == pytest.approx(0.1 + 0.001)
        assert f.take_busy_seconds() == 0.0
    finally:
        f.close()


# ---------------------------------------------------------------- storage

PROFILE = load_profile()


@pytest.fixture
def board() -> NorFlash:
    f = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align)
    yield f
    f.close()


def _meta(version: str, install: str | None = None) -> Metadata:
    meta = Metadata(seq=0, install_section=install)
    for s in PROFILE.sections:
        slot = SlotState(f"{s.name}-{version}", 1000 + len(s.name), hashlib.sha256(s.name.encode()).digest())
        meta.sections[s.name] = SectionState(s.name, [slot, SlotState("")])
    return meta


def _copy_seq(flash: NorFlash, index: int) -> int | None:
    """The seq of metadata copy `index` read straight from flash (None when the sector holds no record)."""
    raw = flash.read(PROFILE.metadata.offset + index * PROFILE.sector_size, 8)
    return int.from_bytes(raw[4:8], "little") if raw[:4] == b"UUM2" else None


def test_blank_flash_has_no_metadata(board: NorFlash) -> None:
    assert MetadataStore(board, PROFILE).load() is None


def test_metadata_round_trip(board: NorFlash) -> None:
    store = MetadataStore(board, PROFILE)
    meta = _meta("7", install="firmware")
    store.save(meta)
    loaded = store.load()
    assert loaded is not None
    assert loaded.seq == meta.seq
    assert loaded.install_section == "firmware"
    assert loaded.sections == meta.sections
    assert list(loaded.sections) == [s.name for s in PROFILE.sections]
    meta = _meta("8")
    store.save(meta)
    loaded = store.load()
    assert loaded.install_section is None
    assert loaded.sections["firmware"].version == "firmware-8"
    assert loaded.sections == meta.sections
    # only the metadata sectors were touched
    meta_end = PROFILE.metadata.offset + 2 * PROFILE.sector_size
    assert board.read(0, PROFILE.metadata.offset) == b"\xff" * PROFILE.metadata.offset
    assert board.read(meta_end, PROFILE.flash_size - meta_end) == b"\xff" * (PROFILE.flash_size - meta_end)


def test_metadata_round_trip_through_a_file(tmp_path) -> None:
    path = tmp_path / "board.bin"
    f = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, path)
    MetadataStore(f, PROFILE).save(_meta("x"))
    f.close()
    g = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, path)
    try:
        loaded = MetadataStore(g, PROFILE).load()
        assert loaded is not None and loaded.sections == _meta("x").sections
    finally:
        g.close()


def test_metadata_copies_alternate(board: NorFlash) -> None:
    store = MetadataStore(board, PROFILE)
    expected = [(0, None), (0, 1), (2, 1), (2, 3), (4, 3)]
    for i, (seq0, seq1) in enumerate(expected):
        store.save(_meta(str(i)))
        assert (_copy_seq(board, 0), _copy_seq(board, 1)) == (seq0, seq1)
        loaded = store.load()
        assert loaded.seq == i
        assert loaded.sections["config"].version == f"config-{i}"


def _flip_byte(flash: NorFlash, offset: int) -> None:
    """Corrupt one byte the way a NOR part allows: read the sector, erase it, program it back changed."""
    start = offset - offset % flash.sector_size
    data = bytearray(flash.read(start, flash.sector_size))
    data[offset - start] ^= 0x40
    flash.erase(start, flash.sector_size)
    flash.program(start, bytes(data))


@pytest.mark.parametrize("where", [4, 10, 25, 30, 70])  # seq, install_section, count, a section name, a version
def test_corrupted_newest_copy_falls_back_to_the_older(board: NorFlash, where: int) -> None:
    store = MetadataStore(board, PROFILE)
    store.save(_meta("old"))  # copy 0, seq 0
    store.save(_meta("new"))  # copy 1, seq 1
    assert store.load().sections["firmware"].version == "firmware-new"
    _flip_byte(board, PROFILE.metadata.offset + PROFILE.sector_size + where)
    loaded = store.load()
    assert loaded is not None
    assert loaded.seq == 0
    assert loaded.sections["firmware"].version == "firmware-old"
    assert loaded.sections == _meta("old").sections
    # the next save goes over the corrupted copy, keeping the good old one
    store.save(_meta("newer"))
    assert _copy_seq(board, 0) == 0
    assert store.load().sections["firmware"].version == "firmware-newer"
    _flip_byte(board, PROFILE.metadata.offset + PROFILE.sector_size + where)
    assert store.load().sections["firmware"].version == "firmware-old"


def test_both_copies_corrupted_is_blank(board: NorFlash) -> None:
    store = MetadataStore(board, PROFILE)
    store.save(_meta("a"))
    store.save(_meta("b"))
    _flip_byte(board, PROFILE.metadata.offset + 40)
    _flip_byte(board, PROFILE.metadata.offset + PROFILE.sector_size + 40)
    assert store.load() is None


def test_torn_metadata_write_keeps_the_previous_copy(board: NorFlash) -> None:
    """Power lost after the erase of the target sector, before its program: the other copy stands."""
    store = MetadataStore(board, PROFILE)
    store.save(_meta("a"))
    store.save(_meta("b"))
    board.erase(PROFILE.metadata.offset, PROFILE.sector_size)  # the copy the third save would replace
    assert store.load().sections["config"].version == "config-b"


def test_staging_layout() -> None:
    staging_flash = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align)
    try:
        st = Staging(staging_flash, PROFILE)
        header = staging_header_size(PROFILE, PROFILE.staging.size)
        assert header % PROFILE.sector_size == 0 and header > 0
        assert st.data_offset == PROFILE.staging.offset + header
        assert st.capacity == PROFILE.staging.size - header
        assert st.capacity >= max(s.size for s in PROFILE.sections if s.writable)
        # one journal unit per staging sector fits in the header
        assert JOURNAL_START + (PROFILE.staging.size // PROFILE.sector_size) * PROFILE.write_align <= header
    finally:
        staging_flash.close()


def test_staging_journal(board: NorFlash) -> None:
    st = Staging(board, PROFILE)
    sector = PROFILE.sector_size
    assert st.read_header() is None
    size = 5 * sector + 100
    key = hashlib.sha256(b"key").digest()
    st.start(key, size, "firmware")
    assert st.read_header() == (key, size, "firmware")
    assert st.staged_bytes(size) == 0
    st.mark_sector_done(0)
    assert st.staged_bytes(size) == sector
    st.mark_sector_done(1)
    assert st.staged_bytes(size) == 2 * sector
    st.mark_sector_done(2)
    assert st.staged_bytes(size) == 3 * sector
    st.mark_sector_done(3)
    assert st.staged_bytes(size) == 4 * sector
    st.mark_sector_done(4)
    st.mark_sector_done(5)  # the last, partial sector
    assert st.staged_bytes(size) == size
    with pytest.raises(FlashError):  # a journal unit is programmed once
        st.mark_sector_done(1)
    # a new transfer wipes the journal
    st.start(hashlib.sha256(b"other").digest(), 3 * sector, "config")
    assert st.read_header() == (hashlib.sha256(b"other").digest(), 3 * sector, "config")
    assert st.staged_bytes(3 * sector) == 0
    st.clear()
    assert st.read_header() is None


def test_staging_journal_survives_a_reset(tmp_path) -> None:
    path = tmp_path / "board.bin"
    f = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, path)
    st = Staging(f, PROFILE)
    key = b"k" * 32
    st.start(key, 10 * PROFILE.sector_size, "firmware")
    for i in range(3):
        st.mark_sector_done(i)
    f.close()
    g = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, path)
    try:
        st = Staging(g, PROFILE)
        assert st.read_header() == (key, 10 * PROFILE.sector_size, "firmware")
        assert st.staged_bytes(10 * PROFILE.sector_size) == 3 * PROFILE.sector_size
    finally:
        g.close()


def test_staging_digest(board: NorFlash) -> None:
    st = Staging(board, PROFILE)
    data = bytes(range(256)) * 40
    board.erase(st.data_offset, 3 * PROFILE.sector_size)
    board.program(st.data_offset, data)
    assert st.digest(st.data_offset, len(data)) == hashlib.sha256(data).digest()
    assert st.digest(st.data_offset, 1000) == hashlib.sha256(data[:1000]).digest()
    assert st.digest(st.data_offset, 0) == hashlib.sha256(b"").digest()
    assert st.digest(st.data_offset, 1000, tail=b"x") == hashlib.sha256(data[:1000] + b"x").digest()


def test_a_journal_unit_cut_short_makes_the_journal_untrusted(board: NorFlash) -> None:
    st = Staging(board, PROFILE)
    size = 4 * PROFILE.sector_size
    st.start(b"k" * 32, size, "firmware")
    st.mark_sector_done(0)
    board.program(st.offset + JOURNAL_START + PROFILE.write_align, b"\x00\xff\xff\x0f")  # torn unit 1
    assert st.staged_bytes(size) is None
