"""Many boards at once: 16 emulators on paced 115200-baud PTYs updated by one `uartupdate update`.

No timing is asserted here (bench/bench_multi.py prints the figures); what is checked is
that every board ends up with the image, that one board's failure leaves the others alone,
and what the summary, JSON and exit status say.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from uartupdate.emulator.profile import load_profile
from uartupdate.host.client import Client
from uartupdate.host.emuproc import EmulatorProcess
from uartupdate.host.errors import LinkError
from uartupdate.host.image import Image
from uartupdate.host.multi import BoardResult, format_summary, overall_exit, update_many

BOARDS = 16
SIZE = 8 * 1024


def start_all(tmp_path: Path, n: int, baud: int | None = 115200) -> list[EmulatorProcess]:
    emus = [EmulatorProcess(tmp_path / f"flash-{i}.bin", baud=baud, workdir=tmp_path / f"emu-{i}") for i in range(n)]
    for e in emus:
        e.workdir.mkdir()
    errors: list[BaseException] = []

    def start(e: EmulatorProcess) -> None:
        try:
            e.start()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in emus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for e in emus:
            e.kill()
        raise errors[0]
    return emus


@pytest.fixture
def boards(tmp_path: Path):
    emus = start_all(tmp_path, BOARDS)
    try:
        yield emus
    finally:
        statuses = [e.stop() for e in emus]
        for e in emus:
            e.kill()
    assert statuses == [0] * BOARDS


def section_bytes(emu: EmulatorProcess, name: str, size: int) -> bytes:
    section = load_profile().section(name)
    assert section is not None
    return emu.read_flash(section.offset, size)


def test_sixteen_boards_at_115200_updated_together(boards, run_cli, image) -> None:
    img = image(SIZE)
    ports = [arg for e in boards for arg in ("--port", e.port)]
    proc = run_cli("update", *ports, "--baud", "115200", "-s", "firmware", "--version", "multi-1", "--json",
                   str(img), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["exit"] == 0
    assert [b["port"] for b in out["boards"]] == [e.port for e in boards]
    for b in out["boards"]:
        assert b["ok"] is True and b["size"] == SIZE and b["resumed_from"] == 0
        assert b["bytes_per_second"] > 0 and b["seconds"] > 0
    data = img.read_bytes()
    for e in boards:
        assert section_bytes(e, "firmware", SIZE) == data, e.port
    listed = json.loads(run_cli("list", "--port", boards[5].port, "--json").stdout)
    assert {"section": "firmware", "version": "multi-1", "writable": True} in listed


def test_one_failure_does_not_stop_the_others(tmp_path: Path, run_cli, image) -> None:
    emus = start_all(tmp_path, 3, baud=None)
    try:
        ports_file = tmp_path / "ports.txt"
        ports_file.write_text(f"# the rig\n{emus[0].port}\n\n{emus[1].port}   # slot 2\n/dev/no-such-board\n")
        img = image(40_000)
        emus[2].freeze()  # this board hangs: its update times out, the others finish
        proc = run_cli("update", "--ports-file", str(ports_file), "--port", emus[2].port, "--timeout", "0.5",
                       "--retries", "0", "-s", "config", str(img), timeout=120)
        assert proc.returncode == 3, proc.stderr  # the worst of: link error (missing port, silent board)
        assert "Traceback" not in proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split() == ["PORT", "RESULT", "SECONDS", "THROUGHPUT"]
        rows = {line.split()[0]: line for line in lines[1:-1]}
        assert rows[emus[0].port].split()[1] == "ok" and rows[emus[1].port].split()[1] == "ok"
        assert "no such port" in rows["/dev/no-such-board"]
        assert "no answer" in rows[emus[2].port]
        assert lines[-1] == "2 of 4 boards updated, 2 failed"
        err = proc.stderr.splitlines()
        assert len(err) == 2 and all(line.startswith("uartupdate: ") for line in err)
        emus[2].thaw()
        for e in emus[:2]:
            assert section_bytes(e, "config", 40_000) == img.read_bytes()
    finally:
        for e in emus:
            e.thaw()
            e.stop()
            e.kill()


def test_json_progress_lines(tmp_path: Path, run_cli, image) -> None:
    emus = start_all(tmp_path, 2, baud=None)
    try:
        img = image(100_000)
        proc = run_cli("update", "--port", emus[0].port, "--port", emus[1].port, "-s", "firmware",
                       "--json-progress", str(img), timeout=120)
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["event"] for e in events[:2]] == ["start", "start"]
        assert events[-1]["event"] == "summary" and events[-1]["ok"] is True and len(events[-1]["boards"]) == 2
        for e in emus:
            mine = [ev for ev in events if ev.get("port") == e.port]
            progress = [ev["done"] for ev in mine if ev["event"] == "progress"]
            assert progress == sorted(progress) and progress[-1] == 100_000
            assert mine[-1]["event"] == "done" and mine[-1]["ok"] is True
        # a single board with --json-progress: the same event stream
        proc = run_cli("update", "--port", emus[0].port, "-s", "config", "--json-progress", str(image(5000)))
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert events[0]["event"] == "start" and events[-1]["event"] == "summary" and events[-1]["exit"] == 0
    finally:
        for e in emus:
            e.stop()
            e.kill()


def test_update_many_api_and_summary(tmp_path: Path, image) -> None:
    emus = start_all(tmp_path, 2, baud=None)
    try:
        img = Image.from_file(image(30_000))
        seen: dict[str, int] = {}
        done: list[BoardResult] = []
        ports = [emus[0].port, "/dev/missing-board", emus[1].port]
        results = update_many(ports, "config", img, connect=lambda p: Client(p, timeout=2),
                              on_progress=lambda p, d, t: seen.__setitem__(p, d), on_done=done.append)
        assert [r.port for r in results] == ports
        assert [r.ok for r in results] == [True, False, True]
        assert results[1].exit_code == 3 and "no such port" in (results[1].error or "")
        assert seen == {emus[0].port: 30_000, emus[1].port: 30_000}
        assert sorted(r.port for r in done) == sorted(ports)
        assert overall_exit(results) == 3 and overall_exit([results[0], results[2]]) == 0
        text = format_summary(results)
        assert text.splitlines()[-1] == "2 of 3 boards updated, 1 failed"
        with pytest.raises(LinkError, match="named twice"):
            update_many([emus[0].port, emus[0].port], "config", img, connect=Client)
        refused = update_many([emus[0].port], "bootloader", img, connect=Client)
        assert refused[0].exit_code == 1 and refused[0].status == 403
    finally:
        for e in emus:
            e.stop()
            e.kill()
