"""The pytest plugin (uartupdate/pytest_plugin.py): fixtures and options, used as another project would."""

from __future__ import annotations

import textwrap

from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess

pytest_plugins = ["pytester"]

#: The example of README.md ("pytest plugin"), run by an inner pytest as a user's project would.
EXAMPLE = '''
import hashlib, os
import pytest
from uartupdate.host.errors import DeviceError


def test_board_lists_its_firmware(uartupdate_device):
    names = [s["section"] for s in uartupdate_device.list_sections()]
    assert "firmware" in names


def test_new_firmware_is_installed(uartupdate_device, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(os.urandom(20_000))
    result = uartupdate_device.update("firmware", str(image), version="2.1.0")
    assert result.size == 20_000
    assert {"section": "firmware", "version": "2.1.0", "writable": True} in uartupdate_device.list_sections()


def test_update_survives_a_power_cut(uartupdate_emulator):
    from uartupdate.host.client import Client
    data = os.urandom(64 * 1024)
    (uartupdate_emulator.workdir / "fw.bin").write_bytes(data)

    class Cut(Exception):
        pass

    def cut_halfway(done, total):
        if done >= total // 2:
            uartupdate_emulator.power_cut()
            raise Cut

    with Client(uartupdate_emulator.port) as dev:
        with pytest.raises(Cut):
            dev.update("firmware", str(uartupdate_emulator.workdir / "fw.bin"), "3.0.0", progress=cut_halfway)
    uartupdate_emulator.power_on()                      # same flash file, new process
    with Client(uartupdate_emulator.port) as dev:
        result = dev.update("firmware", str(uartupdate_emulator.workdir / "fw.bin"), "3.0.0")
    assert result.resumed_from > 0
    assert uartupdate_emulator.read_flash(0x40000, len(data)) == data


def test_refusal(uartupdate_device):
    with pytest.raises(DeviceError) as info:
        uartupdate_device.update("bootloader", __file__)
    assert info.value.status == 403
'''


def test_example_runs_against_fresh_emulators(pytester) -> None:
    pytester.makepyfile(test_example=EXAMPLE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_options_are_registered(pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--uartupdate-port=*--port=*", "*--uartupdate-target=*--target=*"])


def test_port_option_connects_to_that_board(pytester, tmp_path) -> None:
    """--port: every test gets the same connection to that port (a board is not reset per test)."""
    with EmulatorProcess(tmp_path / "flash.bin", workdir=tmp_path) as emu:
        with Client(emu.port) as dev:
            dev.update("config", __file__, version="marked")
        pytester.makepyfile(test_board=textwrap.dedent('''
            def test_one(uartupdate_device):
                assert {"section": "config", "version": "marked", "writable": True} in uartupdate_device.list_sections()

            def test_two(uartupdate_device, request):
                assert uartupdate_device is request.getfixturevalue("_uartupdate_board")
        '''))
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--port", emu.port)
        result.assert_outcomes(passed=2)


def test_target_file_without_a_port_is_a_usage_error(pytester) -> None:
    target = pytester.makefile(".toml", board='name = "bench board"\n[[sections]]\nname = "app"\nwritable = true\n')
    pytester.makepyfile(test_x="def test_x(uartupdate_device):\n    pass\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--target", str(target))
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*names no port and has no [[]emulator[]] table: give --port*"])


def test_bad_target_file_is_one_clear_line(pytester) -> None:
    target = pytester.makefile(".toml", board='name = "x"\nbaud = "fast"\n')
    pytester.makepyfile(test_x="def test_x(uartupdate_target):\n    pass\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--target", str(target))
    assert result.ret != 0
    assert "baud must be a non-negative integer" in result.stdout.str() + result.stderr.str()


def test_hil_suite_runs_against_the_emulator_target(pytester) -> None:
    """The conformance suite with the shipped emulator target, as `pytest hil --target ...` (read-only subset)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    result = pytester.runpytest_subprocess(
        str(root / "hil"), "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
        "--target", str(root / "hil" / "targets" / "emulator.toml"), "-m", "not destructive", "-k", "list or line",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 10 and not outcomes.get("failed") and not outcomes.get("error"), outcomes


def test_hil_signature_tests_run_against_the_signed_emulator_target(pytester) -> None:
    """hil/targets/emulator-signed.toml requires signatures on firmware: those tests run there, not skip."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    result = pytester.runpytest_subprocess(
        str(root / "hil" / "test_conformance_refusals.py"), "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
        "--target", str(root / "hil" / "targets" / "emulator-signed.toml"), "-k", "signature or signed",
    )
    result.assert_outcomes(passed=4)
