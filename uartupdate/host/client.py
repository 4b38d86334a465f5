"""The host client: the SWUpdate service over any pyserial port or URL."""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import os
import select
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import serial

from ..core import envelope as env
from ..core.envelope import Status
from ..core.framing import (
    AbortFrame,
    AckFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorReason,
    JsonFrame,
    ReadyFrame,
    encode_frame,
)
from ..core.methods import method_name
from ..core.transfer import LineEstimate, Sender, TransferStats
from .errors import DeviceError, ImageError, LinkError, LinkTimeout, UartUpdateError, UsageError
from .delta import Source, StreamPlan, plan_stream
from .image import Image, open_image

try:
    from serial.serialposix import Serial as PosixSerial
except ImportError:  # Windows
    PosixSerial = None  # type: ignore[assignment,misc]

# emu:// opens an emulated device inside this process (uartupdate/emulator/protocol_emu.py).
if "uartupdate.emulator" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("uartupdate.emulator")

DEFAULT_SRC = "uartupdate"
DIGEST_PAGE = 128  # block digests per BlockDigests answer: ~1.4 KiB, likely to cross a noisy line
BAUD_FALLBACK_SECONDS = 2.5  # a little over the device's 2 s (SPEC: Sys.SetBaud)
LIST_SECTIONS = "/v1/SWUpdate.ListSections"
UPDATE = "/v1/SWUpdate.Update"

Progress = Callable[[int, int], None]


def open_port(url: str, baud: int = 115200) -> serial.SerialBase:
    """Open a device path (/dev/ttyUSB0, COM3, a PTY) or a pyserial URL (socket://, rfc2217://, emu://)."""
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=0.02, write_timeout=10, exclusive=True)
    except ValueError as exc:
        raise LinkError(f"cannot open {url}: {exc}") from None
    except serial.SerialException as exc:
        cause = exc.__cause__ or exc.__context__
        code = getattr(exc, "errno", None) or getattr(cause, "errno", None)
        if code == errno.ENOENT:
            raise LinkError(f"cannot open {url}: no such port") from None
        if code in (errno.EACCES, errno.EPERM):
            raise LinkError(f"cannot open {url}: permission denied (is your user in the dialout group?)") from None
        if code in (errno.EBUSY, errno.EAGAIN):
            raise LinkError(f"cannot open {url}: the port is busy (another program has it open)") from None
        raise LinkError(f"cannot open {url}: {exc}") from None
    return port


@dataclass
class LinkStats:
    """What the host's side of the line saw go wrong (counted per Client, and per update)."""

    crc_errors: int = 0  # frames the host's decoder dropped for a CRC-32 mismatch
    frame_errors: int = 0  # every run of bytes the decoder dropped (CRC errors included)
    retries: int = 0  # requests sent again for want of an answer

    def since(self, before: LinkStats) -> LinkStats:
        return LinkStats(*(getattr(self, f.name) - getattr(before, f.name) for f in fields(self)))

    def copy(self) -> LinkStats:
        return replace(self)


#: Bytes without one valid frame after which the host calls the device's output garbage: more
#: than any frame a device sends (its maximum frame is at most 64 KiB, SPEC 3.1), several times.
GARBAGE_LIMIT = 4 * 65536
#: Bytes without a valid frame that, when a wait ends without an answer, mean garbage, not silence.
GARBAGE_AT_TIMEOUT = 4096
#: ... provided they came in at least this many runs the decoder dropped (an answer spoilt by
#: noise is one or two; line noise at the wrong baud rate holds a 00 every few hundred bytes).
GARBAGE_RUNS = 4
#: The smallest DATA chunk the host shrinks to on a noisy line (SPEC 8.2: multiples of 4).
MIN_CHUNK = 128


@dataclass
class UpdateResult:
    section: str
    size: int
    seconds: float
    resumed_from: int
    wire_bytes_out: int
    wire_bytes_in: int
    stats: TransferStats = field(default_factory=TransferStats)
    #: The device's result of Update: {"slot", "pending"} for a dual-slot section,
    #: {"unchanged": true} when it already ran that version; None otherwise.
    device_result: dict[str, Any] | None = None
    #: What the host saw go wrong on the line during this update.
    link: LinkStats = field(default_factory=lambda: LinkStats())
    #: The device's own error counts during this update (frames it dropped), when the
    #: host can read them (an emu:// device); None for a real board.
    device_errors: dict[str, int] | None = None

    @property
    def retransmissions(self) -> int:
        """DATA frames sent again plus requests sent again."""
        return self.stats.resent_frames + self.link.retries

    @property
    def pending(self) -> bool:
        return bool(self.device_result and self.device_result.get("pending"))

    @property
    def unchanged(self) -> bool:
        return bool(self.device_result and self.device_result.get("unchanged"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "pending": self.pending,
            "unchanged": self.unchanged,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "resumed_from": self.resumed_from,
            "wire_bytes_out": self.wire_bytes_out,
            "wire_bytes_in": self.wire_bytes_in,
            "resent_bytes": self.stats.resent_bytes,
            "naks": self.stats.naks,
            "timeouts": self.stats.timeouts,
            "retransmissions": self.retransmissions,
            "resent_frames": self.stats.resent_frames,
            "request_retries": self.link.retries,
            "crc_errors": self.link.crc_errors,
            "frame_errors": self.link.frame_errors,
            "smallest_chunk": self.stats.smallest_chunk,
            "device_crc_errors": None if self.device_errors is None else self.device_errors["crc_errors"],
            "device_frame_errors": None if self.device_errors is None else self.device_errors["frame_errors"],
        }


class Client:
    """One device on one port. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        port: str | serial.SerialBase,
        *,
        baud: int = 115200,
        timeout: float = 5.0,
        retries: int = 2,
        src: str = DEFAULT_SRC,
        dst: str | None = None,
        key: str | None = None,
    ) -> None:
        self.port = open_port(port, baud) if isinstance(port, str) else port
        self.name = port if isinstance(port, str) else str(getattr(port, "port", port))
        self.timeout = timeout
        self.retries = retries
        self.src = src
        self.dst = dst
        self.key = key  # the device's access key, sent in every envelope this client builds
        self.bytes_out = 0
        self.bytes_in = 0
        self._decoder = FrameDecoder(max_frame=1 << 20)
        self._info: dict[str, Any] | None = None
        self._connect_baud: int | None = None  # set while switch_baud() holds the line at another rate
        self._inbox: list[Frame] = []
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000 + 1)
        self._fd: int | None = self.port.fd if PosixSerial and isinstance(self.port, PosixSerial) else None
        #: What went wrong on the line so far (UpdateResult.link holds one update's share).
        self.link_stats = LinkStats()
        self._junk = 0  # bytes received since the last valid frame
        self._junk_errors = 0  # runs of bytes the decoder dropped since the last valid frame
        self._ready_rtt: float | None = None  # seconds from the last Update request to its READY
        self._line = LineEstimate()  # losses and round trips this line has shown, for every transfer on it

    def close(self) -> None:
        if self._connect_baud is not None:  # leave the device at the rate the next session connects at
            try:
                self.command("/v1/Sys.SetBaud", {"baud": self._connect_baud}, timeout=0.5)
            except UartUpdateError:
                pass  # it goes back by itself when the line stays quiet
        self.port.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ link

    def _write(self, *frames: Frame) -> None:
        data = b"".join(encode_frame(f) for f in frames)
        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            raise LinkTimeout(f"{self.name}: the port accepted no data for 10 s (flow control?)") from None
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.name}: write failed, the port went away ({exc})") from None
        self.bytes_out += len(data)

    def _read_some(self, until: float) -> bytes:
        """Whatever bytes arrive before `until` (at least one, or none when it passes)."""
        if self._fd is not None:  # a POSIX tty: wait in select, sparing pyserial's per-call overhead
            readable, _, _ = select.select([self._fd], [], [], max(0.0, until - time.monotonic()))
            if not readable:
                return b""
            data = os.read(self._fd, 65536)
            if not data:
                raise OSError("end of file")
            return data
        return self.port.read(max(1, self.port.in_waiting))

    def _receive(self, until: float, awaiting: str = "an answer") -> Frame | None:
        """The next frame, reading until the monotonic time `until`; None when it passes.

        The deadline holds even while bytes keep coming. Bytes that hold no valid frame, in
        several runs the decoder dropped (not one long answer spoilt by noise), are garbage
        once there are more than GARBAGE_LIMIT of them, or more than GARBAGE_AT_TIMEOUT when
        the deadline passes: LinkError, since waiting or asking again will not help.
        """
        while not self._inbox:
            try:
                data = self._read_some(until)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(
                    f"{self.name}: read failed while awaiting {awaiting}: the port went away (unplugged?) ({exc})"
                ) from None
            if data:
                self.bytes_in += len(data)
                valid = 0
                errors = 0
                for item in self._decoder.feed(data):
                    if isinstance(item, FrameError):
                        errors += 1
                        self.link_stats.frame_errors += 1
                        if item.reason == FrameErrorReason.CRC:
                            self.link_stats.crc_errors += 1
                    else:
                        self._inbox.append(item)
                        valid += 1
                if valid:
                    self._junk = self._junk_errors = 0
                else:
                    self._junk += len(data)
                    self._junk_errors += errors
                if self._is_garbage(GARBAGE_LIMIT):
                    self._garbage(awaiting)
            if not self._inbox and time.monotonic() >= until:
                if self._is_garbage(GARBAGE_AT_TIMEOUT):
                    self._garbage(awaiting)
                return None
        return self._inbox.pop(0)

    def _is_garbage(self, limit: int) -> bool:
        if self._junk_errors >= GARBAGE_RUNS:
            return self._junk > limit
        return self._junk > 2 * self._decoder.max_frame  # not even a delimiter: two of the largest frames

    def _garbage(self, awaiting: str) -> None:
        junk, self._junk, self._junk_errors = self._junk, 0, 0
        raise LinkError(
            f"{self.name}: {junk} bytes arrived without one valid frame while awaiting {awaiting}: the device "
            "sends data that is not frames (wrong baud rate, or not in its bootloader?)"
        )

    # ------------------------------------------------------------ commands

    def new_id(self) -> int:
        return next(self._ids)

    def call(self, envelope: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a raw request envelope; return the response envelope that answers its ids."""
        cmds = envelope.get("cmds")
        cmds = cmds if isinstance(cmds, list) else []
        ids = {c.get("id") for c in cmds if isinstance(c, dict)}
        names = [method_name(str(c.get("cmd"))) for c in cmds if isinstance(c, dict)]
        what = "the answer to " + (", ".join(names) if names else "the request")
        return self._exchange(JsonFrame(env.dumps(envelope)), ids, timeout or self.timeout, what)

    def _exchange(self, frame: Frame, ids: set[Any], timeout: float, what: str = "an answer") -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            if attempt:
                self.link_stats.retries += 1
            self._write(frame)
            deadline = time.monotonic() + timeout
            while (got := self._receive(deadline, what)) is not None:
                answer = self._response_for(got, ids)
                if answer is not None:
                    return answer
        raise LinkTimeout(
            f"{self.name}: no {what.removeprefix('the ')} after {self.retries + 1} tries of {timeout:g} s "
            "(is the device in its bootloader, and the baud rate right?)"
        )

    @staticmethod
    def _response_for(frame: Frame, ids: set[Any]) -> dict[str, Any] | None:
        if not isinstance(frame, JsonFrame):
            return None
        resp = env.parse_response(frame.payload)
        if resp is None:
            return None
        got = {a.get("id") for a in resp["resp"] if isinstance(a, dict)}
        return resp if got & ids or env.FRAME_ID in got else None

    def command(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Run one command; its `resp`, or DeviceError carrying `status`/`status_msg`."""
        cid = self.new_id()
        req = env.request(self.src, self.dst, key=self.key, cmds=[env.command(cmd, cid, args)])
        resp = self.call(req, timeout)
        return self._result(resp, cid, cmd)

    @staticmethod
    def _result(resp: dict[str, Any], cid: int, cmd: str) -> Any:
        for a in resp["resp"]:
            if isinstance(a, dict) and a.get("id") in (cid, env.FRAME_ID):
                status = a.get("status")
                if status != 0:
                    raise DeviceError(status, str(a.get("status_msg", "")), cmd)
                return a.get("resp")
        raise UartUpdateError(f"the device's answer to {cmd} carries no result for id {cid}")

    def list_sections(self) -> list[dict[str, Any]]:
        return self.command(LIST_SECTIONS)

    def device_info(self) -> dict[str, Any] | None:
        """Sys.GetInfo (what the device affords), or None from a device without it."""
        if self._info is None:
            try:
                self._info = self.command("/v1/Sys.GetInfo") or {}
            except DeviceError as exc:
                if exc.status != Status.NOT_IMPLEMENTED:
                    raise
                self._info = {}
        return self._info or None

    def block_digests(self, section: str) -> list[bytes]:
        """The 8-byte digest of every block of the image `section` runs (SWUpdate.BlockDigests)."""
        out: list[bytes] = []
        while True:
            page = self.command(
                "/v1/SWUpdate.BlockDigests", {"section": section, "offset": len(out), "count": DIGEST_PAGE}
            )
            raw = base64.b64decode(page["digests"])
            out += [raw[i : i + 8] for i in range(0, len(raw), 8)]
            if not raw or len(out) >= page["total"]:
                return out

    def switch_baud(self, goal: int, probe_timeout: float = 0.5) -> bool:
        """Move both ends to `goal` baud (Sys.SetBaud), confirmed by a round trip at the new rate.

        False, with the line back at the old rate, when the device does not offer it or the
        round trip fails (the device goes back by itself when it hears nothing at the new rate).
        """
        old = self.port.baudrate
        info = self.device_info()
        if goal == old or not info or goal not in info.get("bauds", []):
            return goal == old
        self.command("/v1/Sys.SetBaud", {"baud": goal})
        self.port.baudrate = goal
        try:
            self.command("/v1/Sys.GetInfo", timeout=probe_timeout)  # retries x probe_timeout < the fallback
            self._connect_baud = old
            return True
        except LinkError:
            self.port.baudrate = old
            time.sleep(BAUD_FALLBACK_SECONDS)  # the device's own fallback
            self.port.reset_input_buffer()
            self.list_sections()  # the old rate works again, or LinkError says it does not
            return False

    # ------------------------------------------------------------ update

    def update(
        self,
        section: str,
        image: Image | str,
        version: str | None = None,
        sig: dict[str, str] | None = None,
        *,
        progress: Progress | None = None,
        inline: bool = False,
        resume: bool = True,
        force: bool = False,
        full: bool = False,
        compress: bool = True,
    ) -> UpdateResult:
        """Write `image` (an Image, a path, a URL or a metadata document) to `section`.

        Returns once the device has verified and installed it; DeviceError if it refused.
        Blocks the device already runs are kept rather than sent unless `full`, and the rest
        is deflated when that pays unless not `compress` (host/delta.py).
        """
        img = image if isinstance(image, Image) else open_image(image)
        args: dict[str, Any] = {"section": section, "sig": sig or img.sig or {"alg": "sha256", "v": img.sha256.hex()}}
        version = version if version is not None else img.version
        if version is not None:
            args["version"] = version
        if force:
            args["force"] = True
        start, out0, in0 = time.monotonic(), self.bytes_out, self.bytes_in
        link0, device0 = self.link_stats.copy(), self._device_errors()
        stats, resumed_from = TransferStats(), 0
        if inline:
            args["blob"] = base64.b64encode(img.read(0, img.size)).decode()
            device_result = self.command(UPDATE, args)
            if progress:
                progress(img.size, img.size)
        else:
            args["size"] = img.size
            if not resume:
                args["resume"] = False
            plan = None
            if not full or compress:
                try:
                    info = self.device_info()
                    digests = None if full or not info else (lambda: self.block_digests(section))
                    plan = plan_stream(img, info, digests, compress)
                except LinkTimeout:  # a lost answer must not cost the update: send it all, plainly
                    plan = None
                args.update(plan.args() if plan else {})
            cid = self.new_id()
            request = env.request(self.src, self.dst, key=self.key, cmds=[env.command(UPDATE, cid, args)])
            response, stats, resumed_from = self._stream(request, args, cid, img, progress, plan)
            if plan is not None and resumed_from <= plan.leading_kept_bytes():
                resumed_from = 0  # the device copied those blocks itself: nothing was resumed
            device_result = self._result(response, cid, UPDATE)
        device1 = self._device_errors()
        return UpdateResult(
            section, img.size, time.monotonic() - start, resumed_from,
            self.bytes_out - out0, self.bytes_in - in0, stats,
            device_result if isinstance(device_result, dict) else None,
            self.link_stats.since(link0),
            None if device0 is None or device1 is None else {k: device1[k] - device0[k] for k in device1},
        )

    def _device_errors(self) -> dict[str, int] | None:
        """The device's own count of dropped frames, when the host can see it (emu://)."""
        stats = getattr(getattr(self.port, "device", None), "stats", None)
        if not isinstance(stats, dict):
            return None
        return {"frame_errors": int(stats.get("frame_errors", 0)), "crc_errors": int(stats.get("crc_errors", 0))}

    def _stream(
        self,
        request: dict[str, Any],
        args: dict[str, Any],
        cid: int,
        img: Image,
        progress: Progress | None,
        plan: StreamPlan | None = None,
    ) -> tuple[dict[str, Any], TransferStats, int]:
        """Send `request` (whose Update `cid` has `args`), stream `img`; the response envelope.

        When the stream stalls (nothing acknowledged for the timeout, after retransmissions),
        the host asks again with the same request (SPEC 9): the device answers with a READY
        where it stands and streaming goes on, or, when its answer to a finished transfer was
        lost, with that answer again.
        """
        frame = JsonFrame(env.dumps(request))
        total = TransferStats()
        resumed_from: int | None = None
        stalls = 0
        restarted = False
        while True:
            try:
                first = self._await_ready(frame, cid)
            except LinkTimeout as exc:
                if resumed_from is None:
                    raise
                raise LinkTimeout(f"{exc}; the transfer stalled: run the same update again to resume") from None
            if isinstance(first, dict):  # answered at once: refused, or the image was already staged whole
                if progress:
                    progress(img.size, img.size)
                return first, total, img.size if resumed_from is None else resumed_from
            ready = first
            start_over = resumed_from is None and args.get("resume") is False and not restarted  # §8.1: an open transfer goes on
            if ready.offset and (start_over or hashlib.sha256(img.read(0, ready.offset)).digest() != ready.prefix_sha256):
                # The device holds a prefix that is not ours, or the caller asked to start over: drop it.
                self._write(AbortFrame(ready.xfer))
                self._await_answer(cid, time.monotonic() + self.timeout)
                args["resume"] = False
                if plan is not None and args.pop("keep", None):  # a kept block may be what differs
                    plan.keep[:] = bytes(len(plan.keep))
                restarted = True
                frame = JsonFrame(env.dumps(request))
                continue
            if resumed_from is None:
                resumed_from = ready.offset
            source = plan.stream_from(ready.offset) if plan is not None else img
            answer, sender = self._send_image(ready, cid, source, progress)
            total.add(sender.stats)
            if answer is not None:
                return answer, total, resumed_from
            stalls = 1 if sender.acked > ready.offset else stalls + 1
            waiting = (
                "the answer after the last byte" if sender.done else f"acknowledgement of byte {sender.acked}"
            )
            # Asking again is safe: a device whose answer was lost answers the same Update again (SPEC 8.1).
            if stalls > self.retries:
                raise LinkTimeout(
                    f"{self.name}: no {waiting} for {self.timeout:g} s, {stalls} times; "
                    "run the same update again to resume"
                )
            self.link_stats.retries += 1

    def _send_image(
        self, ready: ReadyFrame, cid: int, img: Source, progress: Progress | None
    ) -> tuple[dict[str, Any] | None, Sender]:
        """Stream from READY on: (the answer, or None when the stream stalled; the sender)."""
        now = time.monotonic()
        baud = max(1, getattr(self.port, "baudrate", 115200) or 115200)
        wire_seconds = ready.window * 10 / baud
        sender = Sender(
            img.size, ready.offset, ready.chunk, ready.window, 0.25 + 2 * wire_seconds, now,
            min_chunk=MIN_CHUNK, min_retransmit=0.05 + 2 * ready.chunk * 10 / baud, rtt=self._ready_rtt,
            line=self._line,
        )
        last_progress = now
        while True:
            now = time.monotonic()
            chunks = sender.poll(now)
            if chunks:
                self._write(*(DataFrame(ready.xfer, off, img.read(off, n)) for off, n in chunks))
            awaiting = "the answer to Update" if sender.done else f"acknowledgement of byte {sender.acked}"
            got = self._receive(now + self.timeout if sender.done else sender.deadline(), awaiting)
            now = time.monotonic()
            if isinstance(got, AckFrame) and got.xfer == ready.xfer:
                before = sender.acked
                sender.on_ack(got.offset, got.nak, now)
                if sender.acked > before:
                    last_progress = now
                    if progress:
                        progress(sender.acked, img.size)
            elif got is not None:
                answer = self._response_for(got, {cid})
                if answer is not None:
                    return answer, sender
            if now - last_progress > self.timeout + sender.retransmit_after:  # at least one resend first
                return None, sender


    def call_with_blob_url(
        self,
        envelope: dict[str, Any],
        progress: Progress | None = None,
        on_unresolved: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Like call(), but an Update carrying only `blob_url` is served by the host.

        The device has no network: the host fetches the URL (or metadata document),
        fills in `size` (and `sig`/`version` from the metadata when absent) and streams
        the image. If the URL cannot be fetched the device is never asked and
        the envelope goes to the device as it is (`on_unresolved` hears why).
        """
        cmds = envelope.get("cmds")
        targets = [
            c for c in cmds if isinstance(c, dict) and isinstance(c.get("args"), dict)
            and "blob_url" in c["args"] and "blob" not in c["args"] and "size" not in c["args"]
            and method_name(str(c.get("cmd"))) == "SWUpdate.Update"
        ] if isinstance(cmds, list) else []
        if not targets:
            return self.call(envelope)
        if len(targets) > 1:
            raise UsageError("one envelope can carry one Update with a blob_url")
        cmd = targets[0]
        try:
            img = open_image(str(cmd["args"]["blob_url"]))
        except ImageError as exc:
            if on_unresolved:
                on_unresolved(str(exc))
            return self.call(envelope)  # the device's own answer says why it cannot take a bare URL
        args = dict(cmd["args"], size=img.size)
        args.setdefault("sig", img.sig or {"alg": "sha256", "v": img.sha256.hex()})
        if img.version is not None:
            args.setdefault("version", img.version)
        request = dict(envelope, cmds=[dict(c, args=args) if c is cmd else c for c in cmds])
        response, _, _ = self._stream(request, args, cmd.get("id"), img, progress)
        return response

    def _await_ready(self, frame: Frame, cid: int) -> ReadyFrame | dict[str, Any]:
        for attempt in range(self.retries + 1):
            if attempt:
                self.link_stats.retries += 1
            self._write(frame)
            sent = time.monotonic()
            deadline = sent + self.timeout
            while (got := self._receive(deadline, "the answer to Update")) is not None:
                if isinstance(got, ReadyFrame):
                    self._ready_rtt = time.monotonic() - sent  # a first round trip for the Sender
                    return got
                answer = self._response_for(got, {cid})
                if answer is not None:
                    return answer
        raise LinkTimeout(
            f"{self.name}: no answer to Update after {self.retries + 1} tries of {self.timeout:g} s "
            "(is the device in its bootloader, and the baud rate right?)"
        )

    def _await_answer(self, cid: int, deadline: float) -> dict[str, Any] | None:
        while (got := self._receive(deadline, "the answer to Update")) is not None:
            answer = self._response_for(got, {cid})
            if answer is not None:
                return answer
        return None
