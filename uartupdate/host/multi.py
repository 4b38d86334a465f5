"""One image to many boards at once: a thread per port, each with its own Client.

The protocol stays in the sans-I/O core and the Client; this module only runs one
Client per port side by side and collects a result per board. One board's failure
(refusal, dead link, missing port) never stops the others.

    results = update_many(["/dev/ttyUSB0", "/dev/ttyUSB1"], "firmware", open_image("fw.bin"),
                          connect=lambda port: Client(port, baud=115200))
    exit_code = overall_exit(results)
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import serial

from .client import Client, UpdateResult
from .errors import DeviceError, LinkError, UartUpdateError
from .image import Image

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_LINK = 0, 1, 2, 3


@dataclass
class BoardResult:
    port: str
    ok: bool
    seconds: float
    size: int
    exit_code: int = EXIT_OK
    error: str | None = None
    status: int | None = None  # the device's status when it refused
    result: UpdateResult | None = None

    @property
    def throughput(self) -> float | None:
        """Image bytes per second, for a board that finished."""
        if not self.ok or self.seconds <= 0:
            return None
        return self.size / self.seconds

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"port": self.port, "ok": self.ok, "exit": self.exit_code, "seconds": round(self.seconds, 3)}
        if self.result is not None:
            d.update(self.result.as_dict())
            d["seconds"] = round(self.seconds, 3)
            d["bytes_per_second"] = round(self.throughput or 0.0, 1)
        if self.error is not None:
            d["error"] = self.error
        if self.status is not None:
            d["status"] = self.status
        return d


def failure(port: str, exc: BaseException, seconds: float = 0.0, size: int = 0) -> BoardResult:
    """A BoardResult for an exception, with the exit code a single-board run would have."""
    if isinstance(exc, DeviceError):
        return BoardResult(port, False, seconds, size, EXIT_REFUSED, str(exc), exc.status)
    if isinstance(exc, UartUpdateError):
        return BoardResult(port, False, seconds, size, exc.exit_code, str(exc))
    if isinstance(exc, (OSError, serial.SerialException)):
        return BoardResult(port, False, seconds, size, EXIT_LINK, f"{port}: {exc}")
    return BoardResult(port, False, seconds, size, EXIT_REFUSED, f"{port}: unexpected error: {exc!r}")


def update_one(
    port: str,
    section: str,
    image: Image,
    *,
    connect: Callable[[str], Client],
    version: str | None = None,
    inline: bool = False,
    resume: bool = True,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    before: Callable[[Client], None] | None = None,
    after: Callable[[Client], None] | None = None,
) -> BoardResult:
    """Update one board; never raises for the board's own failures (they are in the result)."""
    start = time.monotonic()
    img = copy.copy(image)
    img._file = None  # each thread reads through its own file handle
    try:
        with connect(port) as client:
            if before is not None:
                before(client)
            result = client.update(section, img, version, progress=progress, inline=inline, resume=resume, force=force)
            if after is not None:
                after(client)
        return BoardResult(port, True, result.seconds, result.size, result=result)
    except Exception as exc:  # noqa: BLE001 - one board's failure is its result, not everyone's
        return failure(port, exc, time.monotonic() - start, image.size)
    finally:
        img.close()


def update_many(
    ports: list[str],
    section: str,
    image: Image,
    *,
    connect: Callable[[str], Client],
    version: str | None = None,
    inline: bool = False,
    resume: bool = True,
    force: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_done: Callable[[BoardResult], None] | None = None,
    before: Callable[[Client], None] | None = None,
    after: Callable[[Client], None] | None = None,
) -> list[BoardResult]:
    """Update every port in parallel (one thread each); results in the order of `ports`."""
    if len(set(ports)) != len(ports):
        dup = next(p for p in ports if ports.count(p) > 1)
        raise LinkError(f"{dup} is named twice: one port can carry one update at a time") from None
    results: list[BoardResult | None] = [None] * len(ports)

    def work(i: int, port: str) -> None:
        progress = (lambda done, total: on_progress(port, done, total)) if on_progress else None
        r = update_one(port, section, image, connect=connect, version=version, inline=inline, resume=resume,
                       force=force, progress=progress, before=before, after=after)
        results[i] = r
        if on_done is not None:
            on_done(r)

    threads = [threading.Thread(target=work, args=(i, p), name=f"update {p}", daemon=True) for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins keep Ctrl-C deliverable to the main thread
    return [r for r in results if r is not None]


def overall_exit(results: list[BoardResult]) -> int:
    """0 when every board succeeded; else the highest exit code among the boards (3 > 2 > 1)."""
    return max((r.exit_code for r in results), default=EXIT_OK)


def format_summary(results: list[BoardResult]) -> str:
    def rate(r: BoardResult) -> str:
        t = r.throughput
        return f"{t / 1000:.1f} KB/s" if t is not None else "-"

    def outcome(r: BoardResult) -> str:
        if r.ok:
            return "ok" + (f" (resumed at {r.result.resumed_from})" if r.result and r.result.resumed_from else "")
        text = r.error or "failed"
        return text if len(text) <= 60 else text[:57] + "..."

    rows = [("PORT", "RESULT", "SECONDS", "THROUGHPUT")]
    rows += [(r.port, outcome(r), f"{r.seconds:.2f}", rate(r)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        lines.append("  ".join(cells).rstrip())
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} of {len(results)} boards updated" + (f", {failed} failed" if failed else ""))
    return "\n".join(lines)


class ProgressLines:
    """A progress line per board on a terminal, redrawn in place (ANSI) a few times a second."""

    def __init__(self, ports: list[str], total: int, stream: Any, interval: float = 0.2) -> None:
        self.ports = ports
        self.total = total
        self.stream = stream
        self.state: dict[str, tuple[int, float, str]] = {p: (0, 0.0, "") for p in ports}  # done, finished at, word
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._drawn = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="progress", daemon=True)
        self._thread.start()

    def progress(self, port: str, done: int, total: int) -> None:
        with self._lock:
            self.state[port] = (done, self.state[port][1], "")

    def done(self, r: BoardResult) -> None:
        with self._lock:
            text = "done" if r.ok else "FAILED"
            self.state[r.port] = (r.size if r.ok else self.state[r.port][0], time.monotonic(), text)

    def _line(self, port: str) -> str:
        done, finished_at, end = self.state[port]
        width = 24
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        elapsed = max(1e-6, (finished_at if end else time.monotonic()) - self.started)
        return f"{port:<16} [{bar}] {100 * frac:5.1f}%  {done / 1000:8.1f} kB  {done / elapsed / 1000:6.1f} kB/s  {end}"

    def _draw(self) -> None:
        with self._lock:
            lines = [self._line(p) for p in self.ports]
        out = f"\x1b[{self._drawn}F" if self._drawn else ""
        out += "".join(f"\x1b[2K{line}\n" for line in lines)
        self._drawn = len(lines)
        self.stream.write(out)
        self.stream.flush()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._draw()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._draw()


class JsonProgress:
    """JSON Lines: a start event per board, throttled progress events, a done event per board."""

    def __init__(self, ports: list[str], section: str, total: int, emit: Callable[[dict[str, Any]], None],
                 interval: float = 0.25) -> None:
        self.emit = emit
        self.interval = interval
        self._last: dict[str, float] = {}
        for p in ports:
            emit({"event": "start", "port": p, "section": section, "size": total})

    def progress(self, port: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last.get(port, 0.0) < self.interval:
            return
        self._last[port] = now
        self.emit({"event": "progress", "port": port, "done": done, "total": total})

    def done(self, r: BoardResult) -> None:
        self.emit({"event": "done", **r.as_dict()})

    def close(self) -> None:
        pass
