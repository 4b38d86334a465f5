"""Power cut at every flash operation of an update and of a revert, whole or torn.

For each operation i of the sequence, a fresh copy of the flash loses power just
before operation i, or in the middle of it (random, seeded bits). The device then
powers up from what the flash holds, and must boot an image whose digest is the old
or the new one (never anything else), keep consistent metadata, and take the same
update again.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from uartupdate.core.envelope import dumps
from uartupdate.core.framing import FrameDecoder, JsonFrame, encode_frame
from uartupdate.emulator.device import Device
from uartupdate.emulator.flash import NorFlash, PowerCut
from uartupdate.emulator.profile import Profile
from uartupdate.emulator.storage import flash_digest

KiB = 1024
PROFILE = Profile.from_dict(
    {
        "name": "sweep",
        "address": "dev",
        "flash": {"size": 64 * KiB, "sector_size": KiB, "write_align": 4},
        "link": {"max_frame": 16 * KiB, "chunk": KiB, "buffers": 2},
        "metadata": {"offset": KiB, "size": 2 * KiB},
        "staging": {"offset": 4 * KiB, "size": 12 * KiB},
        "sections": [
            {"name": "boot", "offset": 0, "size": KiB, "writable": False, "version": "1"},
            {"name": "app", "offset": 16 * KiB, "size": 8 * KiB, "writable": True, "version": "0",
             "slot_b": 24 * KiB, "policy": {"trial_boots": 1}},
            {"name": "cfg", "offset": 32 * KiB, "size": 4 * KiB, "writable": True, "version": "1"},
        ],
    }
)
OLD = bytes((i * 7 + 1) % 251 for i in range(3 * KiB - 100))
NEW = bytes((i * 13 + 5) % 253 for i in range(3 * KiB + 300))
DIGESTS = {hashlib.sha256(OLD).digest(): "old", hashlib.sha256(NEW).digest(): "new"}


def power_up(path: Path, cut: PowerCut | None = None) -> Device:
    flash = NorFlash(PROFILE.flash_size, PROFILE.sector_size, PROFILE.write_align, path)
    flash.power_cut = cut
    return Device(PROFILE, flash)


def call(dev: Device, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """One command; its answer, or None when the device said nothing (it lost power)."""
    c: dict[str, Any] = {"cmd": cmd, "id": 1}
    if args is not None:
        c["args"] = args
    out = dev.receive(encode_frame(JsonFrame(dumps({"v": 1, "src": "t", "cmds": [c]}))))
    frames = FrameDecoder(1 << 20).feed(out)
    return json.loads(frames[0].payload)["resp"][0] if frames else None  # type: ignore[union-attr]


def update(dev: Device, section: str, image: bytes, version: str) -> dict[str, Any] | None:
    sig = {"alg": "sha256", "v": hashlib.sha256(image).hexdigest()}
    blob = base64.b64encode(image).decode()
    return call(dev, "SWUpdate.Update", {"section": section, "sig": sig, "blob": blob, "version": version})


def running_image(dev: Device, section: str) -> str:
    """Which image the device booted for `section`: 'old' or 'new' (fails on anything else)."""
    spec = PROFILE.section(section)
    assert spec is not None
    slot = dev.running[section]
    record = dev.meta.sections[section].slots[slot]
    actual = flash_digest(dev.flash, spec.slot_offset(slot), record.size)
    assert actual == record.sha256, "metadata does not describe the image that runs"
    assert dev.meta_store.load() is not None
    return DIGESTS[actual]


def settle(dev: Device, section: str) -> Device:
    """Confirm whatever runs, so that the next update has a confirmed image to keep."""
    if dev.running[section] != dev.meta.sections[section].active:
        assert call(dev, "SWUpdate.Confirm", {"section": section}) == {"id": 1, "status": 0, "resp": {
            "section": section, "slot": dev.running[section], "version": dev.meta.sections[section].slots[
                dev.running[section]].version}}
    return dev


def install(path: Path, section: str, image: bytes, version: str) -> None:
    dev = power_up(path)
    assert update(dev, section, image, version)["status"] == 0  # type: ignore[index]
    if PROFILE.section(section).dual_slot:  # type: ignore[union-attr]
        assert call(dev, "Sys.Reboot")["status"] == 0  # type: ignore[index]
        settle(dev, section)
    dev.flash.close()


@pytest.fixture
def old_installed(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "flash.bin"
    install(path, "app", OLD, "1.0.0")
    install(path, "cfg", OLD, "1")
    return path, path.read_bytes()


def count_operations(path: Path, snapshot: bytes, action: Any) -> int:
    path.write_bytes(snapshot)
    dev = power_up(path)
    before = dev.flash.operations
    action(dev)
    n = dev.flash.operations - before
    dev.flash.close()
    return n


@pytest.mark.slow
@pytest.mark.parametrize("section", ["app", "cfg"])
def test_power_cut_at_every_operation_of_an_update(old_installed: tuple[Path, bytes], section: str) -> None:
    path, snapshot = old_installed
    version = "2.0.0"
    n = count_operations(path, snapshot, lambda dev: update(dev, section, NEW, version))
    assert n > 10
    cases = 0
    for torn in (False, True):
        for i in range(1, n + 1):
            path.write_bytes(snapshot)
            dev = power_up(path)
            dev.flash.power_cut = PowerCut(dev.flash.operations + i, torn=torn, seed=i)
            answer = update(dev, section, NEW, version)
            assert dev.power_cuts == 1, f"operation {i} of {n} was never reached"
            assert answer is None or answer["status"] != 0 or i == n  # no success claimed before the end
            assert running_image(dev, section) in ("old", "new")
            dev.flash.close()
            dev = settle(power_up(path), section)  # another power cycle: boots from the file alone
            assert running_image(dev, section) in ("old", "new")
            assert update(dev, section, NEW, version)["status"] == 0  # type: ignore[index]
            if PROFILE.section(section).dual_slot:  # type: ignore[union-attr]
                call(dev, "Sys.Reboot")
                settle(dev, section)
            assert running_image(dev, section) == "new"
            dev.flash.close()
            cases += 1
    print(f"update of {section!r}: {n} flash operations, {cases} power-cut cases")


@pytest.mark.slow
def test_power_cut_at_every_operation_of_a_revert(old_installed: tuple[Path, bytes]) -> None:
    """New image pending, then two boots without a confirm: the second reverts to the old one."""
    path, snapshot = old_installed
    dev = power_up(path)
    assert update(dev, "app", NEW, "2.0.0") == {"id": 1, "status": 0, "resp": {"slot": 0, "pending": True}}
    dev.flash.close()
    pending = path.read_bytes()

    def two_boots(cut: PowerCut | None) -> Device:
        dev = power_up(path, cut)  # the trial boot of the new image
        call(dev, "Sys.Reboot")  # not confirmed: the bootloader reverts
        return dev

    path.write_bytes(pending)
    dev = two_boots(None)
    n = dev.flash.operations
    assert running_image(dev, "app") == "old"
    dev.flash.close()
    assert n >= 4
    cases = 0
    for torn in (False, True):
        for i in range(1, n + 1):
            path.write_bytes(pending)
            dev = two_boots(PowerCut(i, torn=torn, seed=i))
            assert dev.power_cuts == 1
            assert running_image(dev, "app") in ("old", "new")
            dev.flash.close()
            for _ in range(3):  # boots without a confirm end on the old image, whatever the cut did
                dev = power_up(path)
                assert running_image(dev, "app") in ("old", "new")
                dev.flash.close()
            dev = power_up(path)
            assert running_image(dev, "app") == "old"
            assert dev.meta.sections["app"].pending is None
            assert update(dev, "app", NEW, "2.0.0")["status"] == 0  # type: ignore[index]
            dev.flash.close()
            cases += 1
    print(f"revert of 'app': {n} flash operations, {cases} power-cut cases")


def test_power_cut_during_first_boot_of_a_blank_flash_still_boots(tmp_path: Path) -> None:
    for i in (1, 2):
        path = tmp_path / f"blank{i}.bin"
        dev = power_up(path, PowerCut(i, torn=True, seed=i))
        assert dev.power_cuts == 1
        assert [s["version"] for s in dev.list_sections()] == ["1", "0", "1"]
        dev.flash.close()
