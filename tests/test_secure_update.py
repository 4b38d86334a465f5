"""Signed images, A/B slots with trial boot and revert, anti-downgrade: through the CLI and the Client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uartupdate.emulator.storage import flash_digest
from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.errors import DeviceError
from uartupdate.images import signing

KEY_TYPES = ["ecdsa-p256", "ed25519", "rsa-2048", "rsa-3072"]
OPENSSL = {
    "ecdsa-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ed25519": ["-algorithm", "ed25519"],
    "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa-3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uartupdate", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def emulate(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start `uartupdate emulate --profile P` on a PTY (one power-up for the whole test); its port."""
    running: list[EmulatorProcess] = []

    def start(profile: str) -> str:
        running.append(EmulatorProcess(tmp_path / "f.bin", profile=profile, workdir=tmp_path))
        return running[-1].start()

    yield start
    for emu in running:
        assert emu.stop() == 0


def make_key(tmp: Path, key_type: str, maker: str) -> Path:
    path = tmp / f"{key_type}-{maker}.pem"
    if maker == "openssl":
        subprocess.run(["openssl", "genpkey", *OPENSSL[key_type], "-out", str(path)], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-out", str(path.with_suffix(".pub.pem"))],
                       check=True, capture_output=True)
    else:
        done = cli("keygen", "--type", key_type, "-o", str(path))
        assert done.returncode == 0, done.stderr
    return path


def signed_profile(tmp: Path, keys: list[Path], require: bool = True) -> Path:
    profile = json.loads((resources.files("uartupdate.emulator") / "profiles" / "ab.json").read_text())
    profile["keys"] = [{"file": str(k.with_suffix(".pub.pem"))} for k in keys]
    for s in profile["sections"]:
        if s["name"] == "firmware":
            s["policy"]["signature"] = "required" if require else "optional"
    path = tmp / "signed.json"
    path.write_text(json.dumps(profile))
    return path


def image(tmp: Path, name: str, size: int = 40_000) -> Path:
    path = tmp / name
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("maker", ["uartupdate", "openssl"])
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_signed_update_with_each_key_type(
    tmp_path: Path, emulate: Callable[[str], str], key_type: str, maker: str
) -> None:
    key = make_key(tmp_path, key_type, maker)
    port = emulate(str(signed_profile(tmp_path, [key])))
    fw = image(tmp_path, "fw.bin")
    signed = cli("sign", "--key", str(key), "--section", "firmware", "--version", "2.0.0", str(fw))
    assert signed.returncode == 0, signed.stderr
    sig = json.loads((tmp_path / "fw.bin.sig").read_text())
    assert sig["alg"] == signing.KEY_TYPES[key_type]

    done = cli("update", "--port", port, "-s", "firmware", "--version", "2.0.0", "--sig", str(tmp_path / "fw.bin.sig"),
               "--json", str(fw))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pending"] is True
    for step in (["reboot"], ["confirm", "-s", "firmware"]):
        assert cli(*step, "--port", port).returncode == 0
    listing = json.loads(cli("list", "--port", port, "--json").stdout)
    assert {"section": "firmware", "version": "2.0.0", "writable": True} in listing


def test_forged_replayed_and_downgraded_updates_are_refused_with_distinct_messages(tmp_path: Path) -> None:
    ed = make_key(tmp_path, "ed25519", "uartupdate")
    rogue = make_key(tmp_path, "ed25519", "openssl")  # not trusted
    ec = make_key(tmp_path, "ecdsa-p256", "uartupdate")  # a type the device has no key of
    fw, other = image(tmp_path, "fw.bin"), image(tmp_path, "other.bin")
    key = signing.load_private_key(ed)

    def sig_for(data: bytes, section: str = "firmware", version: str = "2.0.0", k: Any = key) -> dict[str, str]:
        return signing.sign(k, section, version, len(data), hashlib.sha256(data).digest())

    with Client(f"emu://?profile={signed_profile(tmp_path, [ed])}&flash={tmp_path / 'flash.bin'}") as dev:
        good = fw.read_bytes()
        assert dev.update("firmware", str(fw), "2.0.0", sig_for(good)).pending
        dev.command("/v1/Sys.Reboot")
        dev.command("/v1/SWUpdate.Confirm", {"section": "firmware"})
        device = dev.port.device
        section = device.profile.section("firmware")
        running_slot = device.running["firmware"]
        running = flash_digest(device.flash, section.slot_offset(running_slot), len(good))
        assert running == hashlib.sha256(good).digest()

        data = other.read_bytes()
        cases = {
            "signature over another image": (dict(sig=sig_for(good), version="2.1.0"), 422, "does not verify"),
            "signature for another section": (dict(sig=sig_for(data, section="config", version="2.1.0"), version="2.1.0"),
                                              422, "does not verify"),
            "signature for another version": (dict(sig=sig_for(data, version="2.1.0"), version="2.2.0"), 422,
                                              "does not verify"),
            "untrusted key": (dict(sig=sig_for(data, version="2.1.0", k=signing.load_private_key(rogue)),
                                   version="2.1.0"), 422, "does not verify"),
            "key type the device does not trust": (
                dict(sig=sig_for(data, version="2.1.0", k=signing.load_private_key(ec)), version="2.1.0"), 422,
                "trusts no key of type ecdsa-p256-sha256"),
            "truncated signature": (dict(sig={"alg": "ed25519", "v": sig_for(data, version="2.1.0")["v"][:40]},
                                         version="2.1.0"), 400, "sig.v holds"),
            "signature not base64": (dict(sig={"alg": "ed25519", "v": "not base64!"}, version="2.1.0"), 400,
                                     "not valid base64"),
            "unknown alg": (dict(sig={"alg": "dsa", "v": "AAAA"}, version="2.1.0"), 415, "unsupported sig.alg 'dsa'"),
            "sha256 only": (dict(sig={"alg": "sha256", "v": hashlib.sha256(data).hexdigest()}, version="2.1.0"), 403,
                            "accepts only images signed"),
            "downgrade": (dict(sig=sig_for(data, version="1.9.9"), version="1.9.9"), 412,
                          "downgrade of 'firmware' from 2.0.0 to 1.9.9"),
            "not a semantic version": (dict(sig=sig_for(data, version="banana"), version="banana"), 400,
                                       "not a semantic version"),
        }
        messages = set()
        for name, (kwargs, status, text) in cases.items():
            for inline in (True, False):
                with pytest.raises(DeviceError) as err:
                    dev.update("firmware", str(other), inline=inline, **kwargs)
                assert (err.value.status, name) == (status, name), err.value.status_msg
                assert text in err.value.status_msg, (name, err.value.status_msg)
                messages.add(err.value.status_msg)
                assert device.running["firmware"] == running_slot
                assert flash_digest(device.flash, section.slot_offset(running_slot), len(good)) == running
                assert {"section": "firmware", "version": "2.0.0", "writable": True} in dev.list_sections()
        assert len(messages) >= 8

        for name, section_name, size, status in (("read-only", "bootloader", 100, 403),
                                                 ("exceeds the slot", "firmware", section.size + 1, 413)):
            blob = os.urandom(size)
            with pytest.raises(DeviceError) as err:
                dev.update(section_name, _write(tmp_path, name, blob), "9.0.0",
                           sig_for(blob, section=section_name, version="9.0.0"), inline=size < 30_000)
            assert err.value.status == status


def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name.replace(" ", "_")
    path.write_bytes(data)
    return str(path)


def test_trial_boot_reverts_unless_confirmed(tmp_path: Path, emulate: Callable[[str], str]) -> None:
    port = emulate("ab")
    v2, v3 = image(tmp_path, "v2.bin"), image(tmp_path, "v3.bin")

    def version() -> str:
        return {s["section"]: s["version"] for s in json.loads(cli("list", "--port", port, "--json").stdout)}["firmware"]

    done = cli("update", "--port", port, "-s", "firmware", "--version", "2.0.0", str(v2))
    assert done.returncode == 0 and "reboot to try it, then confirm" in done.stdout, done.stderr
    assert version() == "1.0.0"  # pending, not running yet
    assert cli("reboot", "--port", port).returncode == 0
    assert version() == "2.0.0"  # on trial
    status = json.loads(cli("status", "--port", port, "--json").stdout)
    firmware = next(s for s in status if s["section"] == "firmware")
    assert (firmware["confirmed"], firmware["pending"], firmware["trial_boots_left"]) == (False, firmware["running"], 0)
    busy = cli("update", "--port", port, "-s", "firmware", "--version", "3.0.0", str(v3))
    assert busy.returncode == 1 and "unconfirmed trial image" in busy.stderr
    assert cli("reboot", "--port", port).returncode == 0
    assert version() == "1.0.0"  # not confirmed: reverted

    assert cli("update", "--port", port, "-s", "firmware", "--version", "3.0.0", str(v3)).returncode == 0
    assert cli("reboot", "--port", port).returncode == 0
    confirmed = cli("confirm", "--port", port, "-s", "firmware")
    assert confirmed.returncode == 0 and "version 3.0.0" in confirmed.stdout
    assert cli("reboot", "--port", port).returncode == 0
    assert version() == "3.0.0"

    same = cli("update", "--port", port, "-s", "firmware", "--version", "3.0.0", "--json", str(v2))
    assert json.loads(same.stdout)["unchanged"] is True
    forced = cli("update", "--port", port, "-s", "firmware", "--version", "3.0.0", "--force", "--json", str(v2))
    assert json.loads(forced.stdout)["pending"] is True


def test_a_signature_file_for_another_image_is_refused_before_sending(tmp_path: Path) -> None:
    key = make_key(tmp_path, "ed25519", "uartupdate")
    fw, other = image(tmp_path, "fw.bin"), image(tmp_path, "other.bin")
    assert cli("sign", "--key", str(key), "-s", "firmware", "--version", "2.0.0", str(fw)).returncode == 0
    done = cli("update", "--port", "emu://", "-s", "firmware", "--version", "2.0.0", "--sig", f"{fw}.sig", str(other))
    assert done.returncode == 2 and "was made for sha256" in done.stderr


def test_signed_message_binds_section_version_size_and_digest() -> None:
    key = signing.generate_key("ed25519")
    digest = hashlib.sha256(b"image").digest()
    sig = signing.sign(key, "firmware", "1.2.3", 5, digest)
    raw = base64.b64decode(sig["v"])
    public = [key.public_key()]
    assert signing.verify(public, "ed25519", raw, signing.signed_message("firmware", "1.2.3", 5, digest)).ok
    for message in (signing.signed_message("config", "1.2.3", 5, digest),
                    signing.signed_message("firmware", "1.2.4", 5, digest),
                    signing.signed_message("firmware", "1.2.3", 6, digest),
                    signing.signed_message("firmware", "1.2.3", 5, hashlib.sha256(b"imagf").digest())):
        assert not signing.verify(public, "ed25519", raw, message).ok
