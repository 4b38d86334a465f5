"""The emulated device: NOR flash, sections, bootloader policy and the SWUpdate service."""

from __future__ import annotations

import os

from .device import Device
from .flash import NorFlash, PowerCut
from .profile import Profile, load_profile


def make_device(
    profile: Profile | str | os.PathLike[str] | None = None,
    flash: str | os.PathLike[str] | None = None,
    power_cut: PowerCut | None = None,
) -> Device:
    """Power up a device: the profile (default one if None) and its flash file (anonymous if None).

    `power_cut` is armed before the first boot, so its operation count includes the boot's own.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    nor = NorFlash(
        profile.flash_size,
        profile.sector_size,
        profile.write_align,
        flash,
        erase_seconds_per_sector=profile.erase_ms_per_sector / 1000,
        program_seconds_per_byte=profile.program_us_per_byte / 1e6,
    )
    nor.power_cut = power_cut
    return Device(profile, nor)


__all__ = ["Device", "NorFlash", "PowerCut", "Profile", "load_profile", "make_device"]
