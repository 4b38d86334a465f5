"""protocol/SPEC.md §6, §7.2: every refusal has its status, and leaves the board exactly as it was.

On an emulated board "as it was" is checked byte for byte on the flash; on a real board
through ListSections (every version unchanged).
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from uartupdate.host.errors import DeviceError
from uartupdate.host.image import Image

UPDATE = "/v1/SWUpdate.Update"


@pytest.fixture
def unchanged(board):
    """Asserts, after the test, that versions (and an emulator's flash) are what they were before."""
    versions, flash = board.versions(), board.flash()
    yield
    assert board.versions() == versions
    if flash is not None:
        assert board.flash() == flash, "a refused Update changed the flash"


def refused(board, args: dict) -> DeviceError:
    with pytest.raises(DeviceError) as info:
        board.client.command(UPDATE, args)
    assert info.value.status_msg, "a refusal carries a status_msg"
    return info.value


def sha(data: bytes) -> dict:
    return {"alg": "sha256", "v": hashlib.sha256(data).hexdigest()}


DATA = b"hil conformance image " * 8


def test_unknown_section_is_404(board, unchanged) -> None:
    names = {s["section"] for s in board.sections()}
    missing = next(f"nosuch{i}" for i in range(100) if f"nosuch{i}" not in names)
    err = refused(board, {"section": missing, "sig": sha(DATA), "blob": base64.b64encode(DATA).decode()})
    assert err.status == 404


def test_unknown_section_streamed_is_404(board, unchanged) -> None:
    err = refused(board, {"section": "nosuch-section", "sig": sha(DATA), "size": len(DATA)})
    assert err.status == 404


def test_read_only_section_is_403(board, unchanged) -> None:
    read_only = [s["section"] for s in board.sections() if not s["writable"]]
    if not read_only:
        pytest.skip("the board lists no read-only section")
    err = refused(board, {"section": read_only[0], "sig": sha(DATA), "blob": base64.b64encode(DATA).decode()})
    assert err.status == 403
    err = refused(board, {"section": read_only[0], "sig": sha(DATA), "size": len(DATA)})
    assert err.status == 403


def test_bad_digest_inline_is_422(board, unchanged) -> None:
    section = board.rewritable()
    wrong = {"alg": "sha256", "v": hashlib.sha256(DATA + b"x").hexdigest()}
    err = refused(board, {"section": section.name, "sig": wrong, "blob": base64.b64encode(DATA).decode(),
                          "version": board.fresh_version()})
    assert err.status == 422


@pytest.fixture
def sections_unchanged(board):
    """Versions, and on an emulator every section's bytes, as before (staging may change: §8.3)."""
    versions, flash = board.versions(), board.flash()
    yield
    assert board.versions() == versions
    if flash is not None:
        after = board.flash()
        for s in board.target.sections:
            if s.base is not None and s.size:
                assert after[s.base : s.base + s.size] == flash[s.base : s.base + s.size], f"{s.name} changed"


def test_bad_digest_streamed_is_422_after_the_transfer(board, sections_unchanged) -> None:
    section = board.rewritable()
    path = board.image(board.image_size(section, 12_000))
    image = Image.from_file(path)
    wrong = {"alg": "sha256", "v": hashlib.sha256(path.read_bytes() + b"x").hexdigest()}
    with pytest.raises(DeviceError) as info:
        board.client.update(section.name, image, board.fresh_version(), sig=wrong)
    assert info.value.status == 422


def test_malformed_digest_is_400(board, unchanged) -> None:
    section = board.any_writable()
    err = refused(board, {"section": section.name, "sig": {"alg": "sha256", "v": "xyz"}, "size": 10})
    assert err.status == 400


def test_unknown_sig_alg_is_415(board, unchanged) -> None:
    section = board.any_writable()
    err = refused(board, {"section": section.name, "sig": {"alg": "md5", "v": "00" * 16}, "size": 10})
    assert err.status == 415


def test_oversize_is_413(board, unchanged) -> None:
    section = board.any_writable()
    size = section.size
    if not size:
        pytest.skip(f"the target file gives no size for section {section.name!r}")
    err = refused(board, {"section": section.name, "sig": sha(b""), "size": size + 1})
    assert err.status == 413


def test_unknown_argument_is_400(board, unchanged) -> None:
    section = board.any_writable()
    err = refused(board, {"section": section.name, "sig": sha(DATA), "size": len(DATA), "colour": "blue"})
    assert err.status == 400


def test_empty_image_is_400(board, unchanged) -> None:
    section = board.any_writable()
    err = refused(board, {"section": section.name, "sig": sha(b""), "size": 0})
    assert err.status == 400


def test_unknown_command_is_501(board, unchanged) -> None:
    with pytest.raises(DeviceError) as info:
        board.client.command("/v1/SWUpdate.Frobnicate", {})
    assert info.value.status == 501


# ---------------------------------------------------------------- signatures


def _signed_sections(board):
    sections = [s for s in board.target.sections if s.writable and s.signature == "required"]
    if not sections:
        pytest.skip(f"target {board.target.name!r} has no section that requires signed images (signature = \"required\")")
    return sections[0]


def test_unsigned_image_refused_where_signatures_are_required(board, unchanged) -> None:
    section = _signed_sections(board)
    err = refused(board, {"section": section.name, "sig": sha(DATA), "blob": base64.b64encode(DATA).decode(),
                          "version": board.fresh_version()})
    # SPEC leaves the exact status of "signature required, digest given" to the device: forbidden or integrity.
    assert err.status in (403, 422), err


def test_bad_signature_is_422(board, unchanged) -> None:
    from uartupdate.images import signing

    section = _signed_sections(board)
    alg = board.target.signature_alg or signing.ED25519
    key_type = {signing.ED25519: "ed25519", signing.ECDSA_P256: "ecdsa-p256", signing.RSA_PSS: "rsa-2048"}[alg]
    untrusted = signing.generate_key(key_type)  # a key the board has never seen
    version = board.fresh_version()
    sig = signing.sign(untrusted, section.name, version, len(DATA), hashlib.sha256(DATA).digest())
    err = refused(board, {"section": section.name, "sig": sig, "blob": base64.b64encode(DATA).decode(),
                          "version": version})
    assert err.status == 422


def test_bad_signature_streamed_is_422(board, sections_unchanged) -> None:
    from uartupdate.images import signing

    section = _signed_sections(board)
    alg = board.target.signature_alg or signing.ED25519
    key_type = {signing.ED25519: "ed25519", signing.ECDSA_P256: "ecdsa-p256", signing.RSA_PSS: "rsa-2048"}[alg]
    image = Image.from_file(board.image(4096))
    version = board.fresh_version()
    sig = signing.sign(signing.generate_key(key_type), section.name, version, image.size, image.sha256)
    with pytest.raises(DeviceError) as info:
        board.client.update(section.name, image, version, sig=sig)
    assert info.value.status == 422


@pytest.mark.destructive
def test_signed_image_is_installed(board) -> None:
    from uartupdate.images import signing

    section = _signed_sections(board)
    if board.target.signature_key is None:
        pytest.skip("the target file gives no [signatures] key the board trusts")
    if section.slots != 1:
        pytest.skip(f"{section.name} has two slots: a new image runs only after a reboot")
    key = signing.load_private_key(board.target.signature_key)
    path = board.image(board.image_size(section, 6000))
    version = board.fresh_version()
    image = Image.from_file(path)
    sig = signing.sign(key, section.name, version, image.size, image.sha256)
    board.rewritten.add(section.name)
    board.client.update(section.name, image, version, sig=sig)
    assert board.versions()[section.name] == version


def test_several_refusals_in_a_row_leave_the_board_serving(board, unchanged) -> None:
    for _ in range(3):
        refused(board, {"section": "nosuch", "sig": sha(DATA), "size": len(DATA)})
    assert board.sections()


def test_random_garbage_args_never_change_anything(board, unchanged) -> None:
    section = board.any_writable()
    for args in (
        {"section": section.name},
        {"section": section.name, "sig": {}},
        {"section": section.name, "sig": sha(DATA), "blob": "%%%"},
        {"section": section.name, "sig": sha(DATA), "size": -1},
        {"section": 7, "sig": sha(DATA), "size": 1},
        {"section": section.name, "sig": sha(DATA), "size": 3, "blob": base64.b64encode(os.urandom(3)).decode()},
    ):
        assert refused(board, args).status == 400, args
