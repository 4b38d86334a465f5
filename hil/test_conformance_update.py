"""protocol/SPEC.md §7.2, §8: a full update read back through ListSections; resume after an
interrupted transfer and after a power loss. Destructive: they write the target's may_rewrite sections."""

from __future__ import annotations

import hashlib

import pytest

from uartupdate.host.image import Image

pytestmark = pytest.mark.destructive


class Interrupt(Exception):
    """Raised from the progress callback: the host stops in the middle of a transfer."""


def test_full_update_and_readback(board) -> None:
    section = board.rewritable()
    before = board.versions()
    path = board.image(board.image_size(section, 40_000))
    version = board.fresh_version()
    board.rewritten.add(section.name)
    seen: list[int] = []
    result = board.client.update(section.name, str(path), version, progress=lambda done, total: seen.append(done))
    assert result.size == path.stat().st_size and result.resumed_from == 0
    assert seen and seen[-1] == result.size and seen == sorted(seen)
    after = board.versions()
    assert after[section.name] == version
    assert {k: v for k, v in after.items() if k != section.name} == {k: v for k, v in before.items() if k != section.name}
    if board.emulated:  # the emulator's flash is visible: the section holds the image, 0xFF after it
        data = path.read_bytes()
        assert board.flash()[section.base : section.base + len(data)] == data


def test_inline_update(board) -> None:
    section = board.rewritable()
    path = board.image(min(3000, section.size or 3000))
    version = board.fresh_version()
    board.rewritten.add(section.name)
    board.client.update(section.name, str(path), version, inline=True)
    assert board.versions()[section.name] == version


def test_same_update_twice_is_fine(board) -> None:
    section = board.rewritable()
    path = board.image(board.image_size(section, 9000))
    version = board.fresh_version()
    board.rewritten.add(section.name)
    board.client.update(section.name, str(path), version)
    board.client.update(section.name, str(path), version)
    assert board.versions()[section.name] == version


def _interrupted(board, section, image: Image, version: str, at: float, action=None) -> int:
    """Start an update and stop the host once `at` of the image is acknowledged; bytes acked then."""
    acked = [0]

    def progress(done: int, total: int) -> None:
        acked[0] = done
        if done >= at * total and done < total:
            if action is not None:
                action()
            raise Interrupt

    with pytest.raises(Interrupt):
        board.client.update(section.name, image, version, progress=progress)
    return acked[0]


def test_resume_after_the_host_stops_mid_transfer(board) -> None:
    section = board.rewritable()
    size = board.image_size(section, 16 * board.target.sector_size)
    if size < 4 * board.target.sector_size:
        pytest.skip(f"{section.name} is too small for a resume test")
    path = board.image(size)
    image, version = Image.from_file(path), board.fresh_version()
    before = board.versions()[section.name]
    board.rewritten.add(section.name)
    acked = _interrupted(board, section, image, version, 0.5)
    assert board.versions()[section.name] == before, "the section changed before the image was whole"
    result = board.client.update(section.name, image, version)
    assert 0 < result.resumed_from < size
    assert result.resumed_from >= acked - acked % board.target.sector_size
    assert board.versions()[section.name] == version


def test_resume_false_starts_over(board) -> None:
    section = board.rewritable()
    size = board.image_size(section, 8 * board.target.sector_size)
    path = board.image(size)
    image, version = Image.from_file(path), board.fresh_version()
    board.rewritten.add(section.name)
    _interrupted(board, section, image, version, 0.5)
    result = board.client.update(section.name, image, version, resume=False)
    assert result.resumed_from == 0
    assert board.versions()[section.name] == version


def test_a_different_image_does_not_resume_from_a_stale_prefix(board) -> None:
    section = board.rewritable()
    size = board.image_size(section, 8 * board.target.sector_size)
    first = Image.from_file(board.image(size))
    board.rewritten.add(section.name)
    _interrupted(board, section, first, board.fresh_version(), 0.5)
    other_path = board.image(size)
    version = board.fresh_version()
    result = board.client.update(section.name, Image.from_file(other_path), version)
    assert result.resumed_from == 0
    assert board.versions()[section.name] == version
    if board.emulated:
        assert board.flash()[section.base : section.base + size] == other_path.read_bytes()


@pytest.mark.power
def test_resume_after_power_loss_mid_transfer(board) -> None:
    if not board.target.has_power_control:
        pytest.skip(f"target {board.target.name!r} has no [power] off/on commands")
    section = board.rewritable()
    sector = board.target.sector_size
    size = board.image_size(section, 16 * sector)
    if size < 4 * sector:
        pytest.skip(f"{section.name} is too small for a resume test")
    path = board.image(size)
    image, version = Image.from_file(path), board.fresh_version()
    before = board.versions()[section.name]
    board.rewritten.add(section.name)
    try:
        acked = _interrupted(board, section, image, version, 0.5, action=board.power_cut)
    finally:
        board.power_on()
    assert board.versions()[section.name] == before, "power loss mid-transfer changed the running section"
    result = board.client.update(section.name, image, version)
    assert result.resumed_from >= acked - acked % sector - sector  # at most the sector in flight is lost
    assert result.resumed_from > 0
    assert board.versions()[section.name] == version
    if board.emulated:
        assert board.flash()[section.base : section.base + size] == path.read_bytes()
        assert hashlib.sha256(path.read_bytes()).digest() == image.sha256
