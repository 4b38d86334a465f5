"""A device that requires an access key refuses every envelope without the right one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from uartupdate.host.client import Client
from uartupdate.host.errors import DeviceError


@pytest.fixture
def keyed_profile(tmp_path: Path) -> Path:
    profile = json.loads((resources.files("uartupdate.emulator") / "profiles" / "default.json").read_text())
    profile["access_key"] = "s3cret-key"
    path = tmp_path / "keyed.json"
    path.write_text(json.dumps(profile))
    return path


@pytest.mark.parametrize("key", [None, "", "wrong", "s3cret-ke", "s3cret-key2"])
def test_wrong_or_missing_key_is_refused_with_401_and_flash_unchanged(
    keyed_profile: Path, tmp_path: Path, key: str | None
) -> None:
    image = tmp_path / "cfg.bin"
    image.write_bytes(b"\x42" * 1000)
    with Client(f"emu://?profile={keyed_profile}", key=key) as dev:
        flash = dev.port.device.flash
        before = flash.read(0, flash.size)
        for attempt in (lambda: dev.update("config", str(image), "2", inline=True),
                        lambda: dev.update("config", str(image), "2"),
                        dev.list_sections):
            with pytest.raises(DeviceError) as err:
                attempt()
            assert err.value.status == 401
            assert "s3cret" not in err.value.status_msg  # never echoed
        assert flash.read(0, flash.size) == before


def test_right_key_is_served(keyed_profile: Path, tmp_path: Path) -> None:
    image = tmp_path / "cfg.bin"
    image.write_bytes(b"\x42" * 1000)
    with Client(f"emu://?profile={keyed_profile}", key="s3cret-key") as dev:
        dev.update("config", str(image), "2")
        assert {"section": "config", "version": "2", "writable": True} in dev.list_sections()


def test_cli_takes_the_key_from_a_file_or_the_environment(keyed_profile: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "device.key"
    key_file.write_text("s3cret-key\n")
    port = f"emu://?profile={keyed_profile}"
    base = [sys.executable, "-m", "uartupdate", "list", "--port", port, "--json"]
    env = {k: v for k, v in os.environ.items() if k != "UARTUPDATE_KEY"}
    refused = subprocess.run(base, capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "401" in refused.stderr
    by_file = subprocess.run(base + ["--key-file", str(key_file)], capture_output=True, text=True, env=env)
    by_env = subprocess.run(base, capture_output=True, text=True, env={**env, "UARTUPDATE_KEY": "s3cret-key"})
    for done in (by_file, by_env):
        assert done.returncode == 0, done.stderr
        assert [s["section"] for s in json.loads(done.stdout)] == ["bootloader", "config", "firmware"]
