"""End to end: the emulator in a subprocess behind a real PTY, the CLI run as a user runs it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import tty

import serial
from spec_examples import spec_example

ADDRESS = "//api.cesanta.com/device_123"
FACTORY_SECTIONS = [
    {"section": "bootloader", "version": "1.0.0", "writable": False},
    {"section": "config", "version": "1", "writable": True},
    {"section": "firmware", "version": "1234", "writable": True},
]

# The spec's four example envelopes, copied verbatim.
# The spec's examples, as written there (indented JSON text, as a user pastes it).
SPEC_LIST_REQUEST = json.dumps(spec_example("list_sections_request"), indent=2)
SPEC_LIST_RESPONSE = json.dumps(spec_example("list_sections_response"), indent=2)
SPEC_UPDATE_REQUEST = json.dumps(spec_example("update_request"), indent=2)
SPEC_UPDATE_RESPONSE = json.dumps(spec_example("update_response"), indent=2)


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def one_error_line(proc, code: int) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("uartupdate:"), lines[0]
    return lines[0]


def list_json(run_cli, port: str) -> list[dict]:
    return json.loads(ok(run_cli("list", "--port", port, "--json")))


def read_flash(emulator, offset: int, length: int) -> bytes:
    with open(emulator.flash_path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# ---------------------------------------------------------------- list / update


def test_list_table(emulator, run_cli) -> None:
    out = ok(run_cli("list", "--port", emulator.port))
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["SECTION", "VERSION", "WRITABLE"],
        ["bootloader", "1.0.0", "no"],
        ["config", "1", "yes"],
        ["firmware", "1234", "yes"],
    ]
    # the columns line up
    lines = out.splitlines()
    col = lines[0].index("VERSION")
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines)


def test_list_json_is_the_list_sections_array(emulator, run_cli) -> None:
    proc = run_cli("list", "--port", emulator.port, "--json")
    assert list_json(run_cli, emulator.port) == FACTORY_SECTIONS
    assert len(ok(proc).strip().splitlines()) == 1


def test_list_port_from_environment(emulator) -> None:
    env = {**os.environ, "UARTUPDATE_PORT": emulator.port}
    proc = subprocess.run([sys.executable, "-m", "uartupdate", "list", "--json"], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert json.loads(ok(proc)) == FACTORY_SECTIONS


def test_update_then_list_then_flash_file(emulator, run_cli, image) -> None:
    img = image(300 * 1024)
    data = img.read_bytes()
    out = ok(run_cli("update", "--port", emulator.port, "--section", "firmware", "--version", "2.0.0", str(img)))
    assert f"Wrote {len(data)} bytes to firmware" in out
    sections = list_json(run_cli, emulator.port)
    assert sections[2] == {"section": "firmware", "version": "2.0.0", "writable": True}
    assert sections[:2] == FACTORY_SECTIONS[:2]
    emulator.stop()
    fw = emulator.profile.section("firmware")
    with open(emulator.flash_path, "rb") as f:
        f.seek(fw.offset)
        on_flash = f.read(fw.size)
    assert on_flash[: len(data)] == data
    assert on_flash[len(data):] == b"\xff" * (fw.size - len(data))
    assert os.path.getsize(emulator.flash_path) == emulator.profile.flash_size


def test_update_json_and_quiet(emulator, run_cli, image) -> None:
    img = image(40_000)
    proc = run_cli("update", "--port", emulator.port, "-s", "config", "--version", "c2", "--json", str(img))
    result = json.loads(ok(proc))
    assert result["ok"] is True
    assert result["section"] == "config" and result["size"] == 40_000 and result["resumed_from"] == 0
    img2 = image(30_000)
    proc = run_cli("update", "--port", emulator.port, "-s", "config", "--version", "c3", "--quiet", str(img2))
    assert ok(proc) == "" and proc.stderr == ""
    assert list_json(run_cli, emulator.port)[1]["version"] == "c3"
    assert read_flash(emulator, emulator.profile.section("config").offset, 30_000) == img2.read_bytes()


def test_inline_update(emulator, run_cli, image) -> None:
    img = image(20_001)
    ok(run_cli("update", "--port", emulator.port, "--section", "config", "--version", "inl", "--inline", "-q", str(img)))
    assert list_json(run_cli, emulator.port)[1] == {"section": "config", "version": "inl", "writable": True}
    emulator.stop()
    assert read_flash(emulator, emulator.profile.section("config").offset, 20_001) == img.read_bytes()


def test_update_refused_by_the_device(emulator, run_cli, image) -> None:
    img = image(64 * 1024 + 1)
    before = emulator.flash_path.read_bytes()
    line = one_error_line(run_cli("update", "--port", emulator.port, "--section", "config", str(img)), 1)
    assert "413" in line
    line = one_error_line(run_cli("update", "--port", emulator.port, "--section", "bootloader", str(image(10))), 1)
    assert "403" in line
    line = one_error_line(run_cli("update", "--port", emulator.port, "--section", "nope", str(image(10))), 1)
    assert "404" in line
    emulator.stop()
    assert emulator.flash_path.read_bytes() == before


# ---------------------------------------------------------------- the spec's examples


def test_spec_list_sections_example(emulator, run_cli) -> None:
    request = json.loads(SPEC_LIST_REQUEST)
    example = json.loads(SPEC_LIST_RESPONSE)
    proc = run_cli("call", "--port", emulator.port, SPEC_LIST_REQUEST)
    resp = json.loads(ok(proc))
    assert resp["v"] == example["v"] == 1
    assert resp["src"] == request["dst"] == example["src"]
    assert resp["dst"] == request["src"] == example["dst"]
    assert set(resp) == set(example)
    assert isinstance(resp["resp"], list) and len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert set(answer) == set(example["resp"][0])
    assert answer["id"] == 123 and answer["status"] == 0
    assert isinstance(answer["resp"], list) and answer["resp"]
    for item in answer["resp"]:
        assert set(item) == {"section", "version", "writable"}
        assert isinstance(item["section"], str) and isinstance(item["version"], str)
        assert isinstance(item["writable"], bool)
    assert example["resp"][0]["resp"][0] in answer["resp"]
    assert answer["resp"] == FACTORY_SECTIONS


def test_spec_list_sections_example_from_stdin(emulator, run_cli) -> None:
    resp = json.loads(ok(run_cli("call", "--port", emulator.port, "-", input=SPEC_LIST_REQUEST)))
    assert resp["resp"][0]["id"] == 123 and resp["resp"][0]["resp"] == FACTORY_SECTIONS


def test_spec_update_example(emulator, run_cli) -> None:
    request = json.loads(SPEC_UPDATE_REQUEST)
    example = json.loads(SPEC_UPDATE_RESPONSE)
    before = emulator.flash_path.read_bytes()
    proc = run_cli("call", "--port", emulator.port, SPEC_UPDATE_REQUEST)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    resp = json.loads(proc.stdout)
    assert resp["v"] == 1
    assert resp["src"] == request["dst"] and resp["dst"] == request["src"]
    assert set(resp) == set(example)
    assert len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert answer["id"] == 123
    assert answer["status"] != 0
    assert isinstance(answer["status_msg"], str) and answer["status_msg"]
    assert list_json(run_cli, emulator.port) == FACTORY_SECTIONS
    emulator.stop()
    assert emulator.flash_path.read_bytes() == before


# ---------------------------------------------------------------- refusals through `call`

GOOD = b"a small image"
GOOD_SIG = {"alg": "sha256", "v": hashlib.sha256(GOOD).hexdigest()}
GOOD_BLOB = base64.b64encode(GOOD).decode()


def _update(id: int, args) -> dict:
    return {"cmd": "/v1/SWUpdate.Update", "id": id, "args": args}


def _env(*cmds, **over) -> dict:
    env = {"v": 1, "src": "//tests/user", "dst": ADDRESS, "cmds": list(cmds)}
    env.update(over)
    return env


CALL_REFUSALS = [
    (_env({"cmd": "/v1/SWUpdate.Reboot", "id": 1}), 1, 501),
    (_env(_update(2, {"section": "radio", "sig": GOOD_SIG, "blob": GOOD_BLOB})), 2, 404),
    (_env(_update(3, {"section": "bootloader", "sig": GOOD_SIG, "blob": GOOD_BLOB})), 3, 403),
    (_env(_update(4, {"section": 7, "sig": GOOD_SIG, "blob": GOOD_BLOB})), 4, 400),
    (_env(_update(5, {"section": "config", "blob": GOOD_BLOB})), 5, 400),
    (_env(_update(6, {"section": "config", "sig": {"v": GOOD_SIG["v"]}, "blob": GOOD_BLOB})), 6, 400),
    (_env(_update(7, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "force": 1})), 7, 400),
    (_env(_update(8, {"section": "config", "sig": GOOD_SIG, "blob": "%%% not base64 %%%"})), 8, 400),
    (_env(_update(9, {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "blob": GOOD_BLOB})), 9, 422),
    (_env(_update(10, {"section": "config", "sig": GOOD_SIG, "size": 65537})), 10, 413),
    (_env(_update(11, {"section": "config", "sig": {"alg": "crc32", "v": "1234abcd"}, "blob": GOOD_BLOB})), 11, 415),
    (_env(_update(12, {"section": "config", "sig": {"alg": "sha256", "v": "xy" * 32}, "blob": GOOD_BLOB})), 12, 400),
    (_env(_update(13, {"section": "config", "sig": GOOD_SIG, "blob_url": "https://my.server/fw.bin"})), 13, 400),
    (_env(_update(14, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "size": 13})), 14, 400),
    (_env(_update(15, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "version": "v" * 33})), 15, 400),
    (_env({"cmd": "/v1/SWUpdate.ListSections", "id": 16}, v=2), 0, 505),
    (_env(), 0, 400),  # cmds empty
    ({"v": 1, "src": "//tests/user", "dst": ADDRESS}, 0, 400),  # cmds missing
    (_env({"cmd": "/v1/SWUpdate.ListSections", "id": 0}), 0, 400),
    (_env({"cmd": "/v1/SWUpdate.ListSections", "id": 2**53}), 0, 400),
]


def test_every_refusal_through_call(emulator, run_cli) -> None:
    emulator.stop()  # the factory state is now on file: take the reference copy
    before = emulator.flash_path.read_bytes()
    emulator.start()
    for envelope, id, status in CALL_REFUSALS:
        proc = run_cli("call", "--port", emulator.port, json.dumps(envelope))
        assert proc.returncode == 1, (envelope, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        resp = json.loads(proc.stdout)
        assert resp["v"] == 1 and resp["src"] == ADDRESS
        assert len(resp["resp"]) == 1, resp
        answer = resp["resp"][0]
        assert answer["id"] == id, (envelope, answer)
        assert answer["status"] == status, (envelope, answer)
        assert isinstance(answer.get("status_msg"), str) and answer["status_msg"], answer
        # the flash is mapped shared: the file shows the device's flash while it runs
        assert emulator.flash_path.read_bytes() == before, envelope
    assert list_json(run_cli, emulator.port) == FACTORY_SECTIONS
    emulator.stop()
    assert emulator.flash_path.read_bytes() == before


def test_call_with_mixed_statuses_exits_1(emulator, run_cli) -> None:
    envelope = _env({"cmd": "/v1/SWUpdate.ListSections", "id": 1}, {"cmd": "/v1/SWUpdate.Reboot", "id": 2})
    proc = run_cli("call", "--port", emulator.port, json.dumps(envelope))
    assert proc.returncode == 1
    resp = json.loads(proc.stdout)
    assert [(a["id"], a["status"]) for a in resp["resp"]] == [(1, 0), (2, 501)]


def test_call_inline_update_succeeds(emulator, run_cli) -> None:
    envelope = _env(_update(77, {"section": "config", "sig": GOOD_SIG, "blob": GOOD_BLOB, "version": "called"}))
    resp = json.loads(ok(run_cli("call", "--port", emulator.port, json.dumps(envelope))))
    assert resp["resp"] == [{"id": 77, "status": 0}]
    assert list_json(run_cli, emulator.port)[1]["version"] == "called"
    assert read_flash(emulator, emulator.profile.section("config").offset, len(GOOD)) == GOOD


def test_call_with_an_invalid_envelope_is_a_usage_error(emulator, run_cli) -> None:
    line = one_error_line(run_cli("call", "--port", emulator.port, "{not json"), 2)
    assert "JSON" in line
    one_error_line(run_cli("call", "--port", emulator.port, "[1, 2]"), 2)


def test_call_to_another_device_times_out(emulator, run_cli) -> None:
    envelope = _env({"cmd": "/v1/SWUpdate.ListSections", "id": 1}, dst="//api.cesanta.com/device_999")
    proc = run_cli("call", "--port", emulator.port, "--timeout", "0.3", "--retries", "0", json.dumps(envelope), timeout=20)
    line = one_error_line(proc, 3)
    assert "no answer" in line
    assert proc.stdout == ""
    assert list_json(run_cli, emulator.port) == FACTORY_SECTIONS  # and the device still serves


# ---------------------------------------------------------------- line noise


def _noise(rng: random.Random, n: int) -> bytes:
    data = bytearray(rng.randrange(256) for _ in range(n))
    for i in rng.sample(range(n), n // 50):
        data[i] = 0
    return bytes(data)


def test_garbage_on_the_line_between_calls(emulator, run_cli) -> None:
    rng = random.Random(99)
    assert list_json(run_cli, emulator.port) == FACTORY_SECTIONS
    with serial.Serial(emulator.port, 115200, timeout=0.1) as port:
        port.write(_noise(rng, 4000) + b"\x00\x00\x00")
        port.flush()
    # the noise ended with a delimiter: the very first try is answered
    proc = run_cli("list", "--port", emulator.port, "--json", "--retries", "0", "--timeout", "5")
    assert json.loads(ok(proc)) == FACTORY_SECTIONS
    with serial.Serial(emulator.port, 115200, timeout=0.1) as port:
        port.write(_noise(rng, 3000) + b"\x55\xaa" * 20)  # no delimiter at the end
        port.flush()
    # the first request is spoilt by the noise in front of it; the retry is answered
    proc = run_cli("list", "--port", emulator.port, "--json", "--retries", "3", "--timeout", "0.5")
    assert json.loads(ok(proc)) == FACTORY_SECTIONS
    emulator.stop()


# ---------------------------------------------------------------- user errors and dead links


def test_update_of_a_missing_image(emulator, run_cli, tmp_path) -> None:
    missing = tmp_path / "no-such-image.bin"
    line = one_error_line(run_cli("update", "--port", emulator.port, "--section", "firmware", str(missing)), 2)
    assert str(missing) in line


def test_update_without_a_port(run_cli, image, monkeypatch) -> None:
    monkeypatch.delenv("UARTUPDATE_PORT", raising=False)
    line = one_error_line(run_cli("update", "--section", "firmware", str(image(10))), 2)
    assert "port" in line


def test_usage_errors_exit_2(run_cli) -> None:
    proc = run_cli("update", "--port", "/dev/null")  # no --section, no image
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_list_on_a_missing_port(run_cli) -> None:
    line = one_error_line(run_cli("list", "--port", "/dev/does-not-exist"), 3)
    assert "/dev/does-not-exist" in line


def test_list_on_a_port_with_nobody_behind_it(run_cli) -> None:
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        path = os.ttyname(slave)
        proc = run_cli("list", "--port", path, "--timeout", "0.5", "--retries", "0", timeout=20)
        line = one_error_line(proc, 3)
        assert "no answer" in line and path in line
        assert proc.stdout == ""
    finally:
        os.close(slave)
        os.close(master)


def test_emulate_with_a_bad_flash_file(run_cli, tmp_path) -> None:
    bad = tmp_path / "small.bin"
    bad.write_bytes(b"\xff" * 1000)
    line = one_error_line(run_cli("emulate", "--flash", str(bad), timeout=20), 2)
    assert "1000" in line
    assert bad.read_bytes() == b"\xff" * 1000


# ---------------------------------------------------------------- persistence


def test_restart_on_the_same_flash_keeps_the_version(emulator, run_cli, image) -> None:
    img = image(12_345)
    ok(run_cli("update", "--port", emulator.port, "--section", "config", "--version", "cfg-7", "-q", str(img)))
    ok(run_cli("update", "--port", emulator.port, "--section", "firmware", "--version", "fw-9", "-q", "--inline",
               str(image(1000))))
    emulator.restart()  # SIGTERM, exit 0, then a new process and PTY on the same flash file
    sections = list_json(run_cli, emulator.port)
    assert sections == [
        {"section": "bootloader", "version": "1.0.0", "writable": False},
        {"section": "config", "version": "cfg-7", "writable": True},
        {"section": "firmware", "version": "fw-9", "writable": True},
    ]
    assert read_flash(emulator, emulator.profile.section("config").offset, 12_345) == img.read_bytes()


def test_emulator_exits_0_on_sigint(tmp_path) -> None:
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uartupdate", "emulate", "--flash", str(tmp_path / "f.bin")],
                                stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while b"\n" not in (tmp_path / "out").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert os.path.getsize(tmp_path / "f.bin") == 4 * 1024 * 1024
