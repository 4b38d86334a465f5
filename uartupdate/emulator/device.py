"""The device side of the SWUpdate service: bytes from the wire in, bytes to the wire out.

Sans-I/O like the rest of the core: the endpoint that owns the port feeds
`Device.receive` and writes what it returns. The flash is the only state that
survives a reset; `Device(...)` on an existing flash is a power-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..core import envelope as env
from ..core.envelope import Status
from ..core.framing import (
    AbortFrame,
    AckFrame,
    DataFrame,
    FrameDecoder,
    FrameError,
    FrameErrorReason,
    JsonFrame,
    ReadyFrame,
    encode_frame,
)
from ..core.methods import check_args, definitions, method_name
from .flash import FlashError, NorFlash
from .profile import Profile, SectionSpec
from .storage import Metadata, MetadataStore, SectionState, Staging

SUPPORTED_SIG_ALGS = ("sha256",)
HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class Refusal(Exception):
    def __init__(self, status: Status, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


@dataclass
class PendingFrame:
    """A request frame whose answers wait for a streamed Update to finish."""

    src: str
    answers: list[dict[str, Any]]
    remaining: list[Any]


@dataclass
class Transfer:
    xfer: int
    cmd_id: int
    key: bytes
    section: SectionSpec
    size: int
    digest: bytes
    version: str | None
    next_offset: int  # every byte below is in flash (or in `carry`)
    carry: bytearray = field(default_factory=bytearray)  # < write_align bytes not yet programmed
    nak_sent: bool = False
    acked: int = 0  # offset in the last ACK sent
    frame: PendingFrame | None = None


class Device:
    def __init__(self, profile: Profile, flash: NorFlash) -> None:
        self.profile = profile
        self.flash = flash
        self.address = profile.address
        self.decoder = FrameDecoder(profile.max_frame)
        self.meta_store = MetadataStore(flash, profile)
        self.staging = Staging(flash, profile)
        self.transfer: Transfer | None = None
        self._next_xfer = 1
        self.stats = {"frames": 0, "frame_errors": 0, "crc_errors": 0}
        self._outbox = bytearray()  # answers produced out of turn (a superseded transfer's)
        self.meta = self._boot()

    # ------------------------------------------------------------ boot

    def _boot(self) -> Metadata:
        meta = self.meta_store.load()
        if meta is None:  # blank flash: factory state
            meta = Metadata(seq=0)
            for s in self.profile.sections:
                meta.sections[s.name] = SectionState(s.name, s.version, 0, b"\x00" * 32)
            self.meta_store.save(meta)
        for s in self.profile.sections:  # a profile may have gained sections
            meta.sections.setdefault(s.name, SectionState(s.name, s.version, 0, b"\x00" * 32))
        if meta.install_section:  # power was lost while copying staging into a section: redo it
            self._copy_staging_to(self.profile.section(meta.install_section), meta.sections[meta.install_section].size)
            meta.install_section = None
            self.meta_store.save(meta)
            self.staging.clear()
        return meta

    # ------------------------------------------------------------ wire

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the wire; returns the bytes to send back."""
        out = bytearray()
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self.stats["frame_errors"] += 1
                if item.reason == FrameErrorReason.CRC:
                    self.stats["crc_errors"] += 1
                if item.reason == FrameErrorReason.TOO_LARGE:
                    out += self._frame_level(None, Status.TOO_LARGE, item.detail)
                continue  # noise: dropped, the sender retries on its timeout
            self.stats["frames"] += 1
            if isinstance(item, JsonFrame):
                out += self._on_json(item.payload)
            elif isinstance(item, DataFrame):
                out += self._on_data(item)
            elif isinstance(item, AbortFrame):
                out += self._on_abort(item)
            # ACK and READY travel device -> host only: ignored here
        out[:0] = self._outbox
        self._outbox.clear()
        return bytes(out)

    def _send(self, obj: dict[str, Any]) -> bytes:
        return encode_frame(JsonFrame(env.dumps(obj)))

    def _frame_level(self, src: str | None, status: Status, msg: str) -> bytes:
        return self._send(env.response(self.address, src, [env.answer(env.FRAME_ID, status, msg=msg)]))

    def _on_json(self, payload: bytes) -> bytes:
        if b'"resp"' in payload and self._is_response(payload):
            return b""  # answers are never answered: two devices (or an echo) would loop forever
        try:
            req = env.parse_request(payload)
        except env.EnvelopeError as exc:
            # A frame meant for another device must not be answered, even when broken.
            if self._addressed_elsewhere(payload):
                return b""
            return self._frame_level(exc.src, exc.status, exc.msg)
        if req.dst is not None and req.dst not in (self.address, env.BROADCAST):
            return b""
        if self.profile.access_key is not None and not self._key_ok(req.key):
            return self._frame_level(req.src, Status.UNAUTHORIZED, "missing or wrong access key")
        frame = PendingFrame(src=req.src, answers=[], remaining=list(req.commands))
        return self._run(frame)

    def _key_ok(self, key: Any) -> bool:
        expected = self.profile.access_key.encode()  # type: ignore[union-attr]
        given = key.encode() if isinstance(key, str) else b""
        return hmac.compare_digest(given, expected)  # constant time: no timing oracle on the key

    @staticmethod
    def _is_response(payload: bytes) -> bool:
        try:
            env_obj = json.loads(payload)
        except Exception:
            return False
        return isinstance(env_obj, dict) and "resp" in env_obj and "cmds" not in env_obj

    def _addressed_elsewhere(self, payload: bytes) -> bool:
        try:
            dst = json.loads(payload).get("dst")
        except Exception:
            return False
        return isinstance(dst, str) and dst not in (self.address, env.BROADCAST)

    def _run(self, frame: PendingFrame) -> bytes:
        """Answer commands in order; a streamed Update suspends the frame until it ends."""
        out = bytearray()
        while frame.remaining:
            cmd = frame.remaining.pop(0)
            if isinstance(cmd, env.BadCommand):
                frame.answers.append(env.answer(cmd.id, cmd.status, msg=cmd.msg))
                continue
            try:
                result, ready = self._dispatch(cmd, frame)
            except Refusal as exc:
                frame.answers.append(env.answer(cmd.id, exc.status, msg=exc.msg))
                continue
            if ready is not None:
                return bytes(out + ready)  # the answer comes when the transfer ends
            frame.answers.append(env.answer(cmd.id, Status.OK, result))
        return bytes(out + self._send(env.response(self.address, frame.src, frame.answers)))

    def _dispatch(self, cmd: env.Command, frame: PendingFrame) -> tuple[Any, bytes | None]:
        name = method_name(cmd.cmd)
        if name not in definitions():
            raise Refusal(Status.NOT_IMPLEMENTED, f"unknown command {cmd.cmd!r}")
        if name == "SWUpdate.Update" and "blob_url" in cmd.args and not {"blob", "size"} & cmd.args.keys():
            raise Refusal(
                Status.BAD_REQUEST,
                "this device has no network: the host must fetch blob_url and send the image (args.size)",
            )
        problem = check_args(name, cmd.args)
        if problem:
            raise Refusal(Status.BAD_REQUEST, problem)
        if name == "SWUpdate.ListSections":
            return self.list_sections(), None
        if name == "SWUpdate.Update":
            return self._update(cmd, frame)
        raise Refusal(Status.NOT_IMPLEMENTED, f"command {cmd.cmd!r} is not served by this device")

    # ------------------------------------------------------------ methods

    def list_sections(self) -> list[dict[str, Any]]:
        return [
            {"section": s.name, "version": self.meta.sections[s.name].version, "writable": s.writable}
            for s in self.profile.sections
        ]

    def _update(self, cmd: env.Command, frame: PendingFrame) -> tuple[Any, bytes | None]:
        args = cmd.args
        section = self.profile.section(args["section"])
        if section is None:
            raise Refusal(Status.NOT_FOUND, f"no section named {args['section']!r}")
        if not section.writable:
            raise Refusal(Status.FORBIDDEN, f"section {section.name!r} is not writable")
        sig = args["sig"]
        if sig["alg"] not in SUPPORTED_SIG_ALGS:
            raise Refusal(Status.UNSUPPORTED, f"unsupported sig.alg {sig['alg']!r} (supported: sha256)")
        digest = bytes.fromhex(sig["v"]) if HEX64.fullmatch(sig["v"]) else b""
        if len(digest) != 32:
            raise Refusal(Status.BAD_REQUEST, "sig.v must be the 64 hex digits of a SHA-256 digest")
        version = args.get("version")
        if version is not None and (len(version.encode()) > 32 or "\x00" in version):
            raise Refusal(Status.BAD_REQUEST, "version must be at most 32 bytes of UTF-8 without NUL")
        if ("blob" in args) == ("size" in args):
            raise Refusal(Status.BAD_REQUEST, "give exactly one of blob (inline image) or size (streamed image)")
        if "blob" in args:
            try:
                image = base64.b64decode(args["blob"], validate=True)
            except (binascii.Error, ValueError):
                raise Refusal(Status.BAD_REQUEST, "blob is not valid base64 (RFC 4648)") from None
            size = len(image)
        else:
            size = args["size"]
        if size <= 0:
            raise Refusal(Status.BAD_REQUEST, "the image is empty" if size == 0 else "size must not be negative")
        if size > section.size:
            raise Refusal(Status.TOO_LARGE, f"image of {size} bytes does not fit section {section.name!r} ({section.size} bytes)")
        if "blob" in args:
            if hashlib.sha256(image).digest() != digest:
                raise Refusal(Status.INTEGRITY, "SHA-256 of the image does not match sig.v")
            self._abandon("superseded by an inline Update")
            t = self._open_transfer(cmd.id, section, size, digest, version, resume=False)
            self._accept(t, image)
            self._finish(t)  # raises Refusal on failure
            return None, None
        key = self._transfer_key(section, size, sig, version)
        if self.transfer is not None and self.transfer.key == key:
            t = self.transfer  # the host repeated the command: tell it where we are
            t.cmd_id, t.frame, t.nak_sent = cmd.id, frame, False
        else:
            self._abandon("superseded by a new Update")
            t = self._open_transfer(cmd.id, section, size, digest, version, args.get("resume", True), key)
            t.frame = frame
            self.transfer = t
        if t.next_offset >= size:
            self.transfer = None
            self._finish(t)
            return None, None
        return None, self._ready(t)

    @staticmethod
    def _transfer_key(section: SectionSpec, size: int, sig: dict[str, Any], version: str | None) -> bytes:
        text = json.dumps([section.name, size, sig["alg"], sig["v"].lower(), version])
        return hashlib.sha256(text.encode()).digest()

    def _open_transfer(
        self,
        cmd_id: int,
        section: SectionSpec,
        size: int,
        digest: bytes,
        version: str | None,
        resume: bool,
        key: bytes | None = None,
    ) -> Transfer:
        key = key or self._transfer_key(section, size, {"alg": "sha256", "v": digest.hex()}, version)
        xfer, self._next_xfer = self._next_xfer, self._next_xfer % 0xFFFF + 1
        offset = 0
        header = self.staging.read_header()
        if resume and header is not None and header[0] == key:
            offset = self.staging.staged_bytes(size)
        else:
            self._flash_op(self.staging.start, key, size, section.name)
        return Transfer(xfer, cmd_id, key, section, size, digest, version, offset)

    def _window(self) -> int:
        return self.profile.chunk * self.profile.buffers

    def _ready(self, t: Transfer) -> bytes:
        t.acked = t.next_offset
        prefix = self.staging.digest(t.next_offset - len(t.carry), tail=bytes(t.carry))
        return encode_frame(ReadyFrame(t.xfer, t.next_offset, self.profile.chunk, self._window(), prefix))

    # ------------------------------------------------------------ streamed data

    def _on_data(self, f: DataFrame) -> bytes:
        t = self.transfer
        if t is None or f.xfer != t.xfer:
            return b""  # a stale transfer's chunk: nothing to say
        if f.offset != t.next_offset or f.offset + len(f.data) > t.size:
            if f.offset > t.next_offset and not t.nak_sent:
                t.nak_sent = True  # one NAK per gap, or every chunk in flight would rewind the host
                t.acked = t.next_offset
                return encode_frame(AckFrame(t.xfer, t.next_offset, nak=True))
            if f.offset < t.next_offset:
                t.acked = t.next_offset
                return encode_frame(AckFrame(t.xfer, t.next_offset))  # duplicate: harmless
            return b""
        t.nak_sent = False
        try:
            self._accept(t, f.data)
        except Refusal as exc:
            return self._end_transfer(t, exc.status, exc.msg)
        if t.next_offset < t.size:
            # Every other chunk is enough: the host still has half its window to send meanwhile.
            if t.next_offset - t.acked < max(self.profile.chunk, self._window() // 2):
                return b""
            t.acked = t.next_offset
            return encode_frame(AckFrame(t.xfer, t.next_offset))
        out = encode_frame(AckFrame(t.xfer, t.next_offset))
        try:
            self._finish(t)
        except Refusal as exc:
            return out + self._end_transfer(t, exc.status, exc.msg)
        return out + self._end_transfer(t, Status.OK, None)

    def _accept(self, t: Transfer, data: bytes) -> None:
        """Program `data` at t.next_offset into staging, erasing sectors as they are entered."""
        sector, align = self.profile.sector_size, self.profile.write_align
        pos = 0
        while pos < len(data):
            at = t.next_offset
            if at % sector == 0 and not t.carry:
                self._flash_op(self.flash.erase, self.staging.data_offset + at, sector)
            take = min(len(data) - pos, sector - at % sector)
            piece = data[pos : pos + take]
            pos += take
            t.next_offset += take
            end_of_image = t.next_offset == t.size
            buf = bytes(t.carry) + piece
            whole = len(buf) - (0 if end_of_image else len(buf) % align)
            if whole:
                start = t.next_offset - len(buf)
                self._flash_op(self.flash.program, self.staging.data_offset + start, buf[:whole] + b"\xff" * (-whole % align))
            t.carry = bytearray(buf[whole:])
            if t.next_offset % sector == 0 or end_of_image:
                self._flash_op(self.staging.mark_sector_done, (t.next_offset - 1) // sector)

    def _finish(self, t: Transfer) -> None:
        """Verify the staged image, then install it; the running section changes only now."""
        if self.staging.digest(t.size) != t.digest:
            self._flash_op(self.staging.clear)
            raise Refusal(Status.INTEGRITY, "SHA-256 of the received image does not match sig.v")
        state = self.meta.sections[t.section.name]
        state.size, state.sha256 = t.size, t.digest
        if t.version is not None:
            state.version = t.version
        self.meta.install_section = t.section.name
        self._flash_op(self.meta_store.save, self.meta)
        self._flash_op(self._copy_staging_to, t.section, t.size)
        self.meta.install_section = None
        self._flash_op(self.meta_store.save, self.meta)
        self._flash_op(self.staging.clear)

    def _copy_staging_to(self, section: SectionSpec | None, size: int) -> None:
        if section is None:
            return
        self.flash.erase(section.offset, section.size)
        step = 1 << 16
        for pos in range(0, size, step):
            block = self.flash.read(self.staging.data_offset + pos, min(step, size - pos))
            self.flash.program(section.offset + pos, block + b"\xff" * (-len(block) % self.profile.write_align))

    def _flash_op(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except FlashError as exc:
            raise Refusal(Status.INTERNAL, f"flash error: {exc}") from None

    def _on_abort(self, f: AbortFrame) -> bytes:
        if self.transfer is None or self.transfer.xfer != f.xfer:
            return b""
        return self._end_transfer(self.transfer, Status.ABORTED, "transfer aborted by the host")

    def _abandon(self, msg: str) -> None:
        """End the open transfer and answer its Update; the caller then restarts staging."""
        if self.transfer is not None:
            self._outbox += self._end_transfer(self.transfer, Status.ABORTED, msg)

    def _end_transfer(self, t: Transfer, status: Status, msg: str | None) -> bytes:
        """Answer the Update that opened `t`, then the rest of its frame."""
        if self.transfer is t:
            self.transfer = None
        frame = t.frame
        if frame is None:
            return b""
        frame.answers.append(env.answer(t.cmd_id, status, msg=msg))
        return self._run(frame)
