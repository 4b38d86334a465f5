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
import zlib
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator
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
from ..images import signing
from ..images.versions import parse_version
from .flash import FlashError, NorFlash, PowerLoss
from .profile import Profile, SectionSpec
from .storage import Metadata, MetadataStore, SectionState, SlotState, Staging, flash_digest

HEX64 = re.compile(r"[0-9a-fA-F]{64}")
MAX_DIGESTS = 4096  # block digests per BlockDigests answer (32 KiB of base64)
ENCODINGS = ("deflate",)


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
    sig: dict[str, str]
    version: str | None
    slot: int  # the slot written (always 0 for single-slot sections, which stage elsewhere)
    data_offset: int  # where in flash the image is staged
    next_offset: int  # image offset: every byte below is in flash (or in `carry`)
    carry: bytearray = field(default_factory=bytearray)  # < write_align bytes not yet programmed
    stream_offset: int = 0  # next expected DATA offset (bytes of the stream, from READY's offset)
    encoding: str | None = None  # "deflate": DATA carries raw deflate of the image bytes it sends
    inflater: Any = None
    keep: bytes = b""  # bitmap: blocks copied from the running image instead of sent
    source_offset: int = 0  # where the running image of the section starts
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
        self._reboot_requested = False
        #: (binding, result) of the last streamed Update that succeeded, to repeat a lost answer.
        self._finished: tuple[bytes, Any] | None = None
        #: Set by Sys.SetBaud for the endpoint that owns the line (it switches, then clears it).
        self.requested_baud: int | None = None
        self.trusted_keys = [signing.load_public_key(pem) for pem in profile.trusted_keys]
        #: Power cuts survived (each followed by a power-up from flash).
        self.power_cuts = 0
        self.meta = Metadata(seq=0)
        #: Slot each section booted from this power-up.
        self.running: dict[str, int] = {}
        self._power_up()

    # ------------------------------------------------------------ boot

    def _power_up(self) -> None:
        """Forget everything but the flash and boot, as a reset does (again if power fails meanwhile)."""
        while True:
            self.decoder = FrameDecoder(self.profile.max_frame)
            self.transfer = None
            self._finished = None
            self._outbox.clear()
            try:
                self.meta = self._boot()
                return
            except PowerLoss:
                self.power_cuts += 1

    def _boot(self) -> Metadata:
        """The bootloader: finish an interrupted install, pick each section's slot, try or revert."""
        meta = self.meta_store.load()
        if meta is None:  # blank flash: factory state
            meta = Metadata(seq=0)
            for s in self.profile.sections:
                meta.sections[s.name] = SectionState.factory(s.name, s.version)
            self.meta_store.save(meta)
        for s in self.profile.sections:  # a profile may have gained sections
            meta.sections.setdefault(s.name, SectionState.factory(s.name, s.version))
        if meta.install_section:  # power was lost while copying staging into a section: redo it
            section = self.profile.section(meta.install_section)
            if section is not None:
                self._copy_staging_to(section, meta.sections[section.name].slots[0].size)
            meta.install_section = None
            self.meta_store.save(meta)
            self.staging.clear()
        self.running = {}
        for s in self.profile.sections:
            state = meta.sections[s.name]
            self.running[s.name] = state.active
            if not s.dual_slot or state.pending is None:
                continue
            if state.tries > 0 and self._slot_valid(s, state, state.pending):
                state.tries -= 1  # a trial boot: counted before it runs, so a hang cannot loop
                self.running[s.name] = state.pending
                if s.auto_confirm:
                    state.active, state.pending, state.tries = state.pending, None, 0
            else:  # not confirmed within its trial boots, or not intact: back to the confirmed image
                state.pending, state.tries = None, 0
            self.meta_store.save(meta)
        return meta

    def _slot_valid(self, section: SectionSpec, state: SectionState, slot: int) -> bool:
        image = state.slots[slot]
        return image.size > 0 and flash_digest(self.flash, section.slot_offset(slot), image.size) == image.sha256

    # ------------------------------------------------------------ wire

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the wire; returns the bytes to send back."""
        out = bytearray()
        try:
            self._receive(data, out)
        except PowerLoss:  # what was sent before the cut is on the wire; the rest dies with RAM
            self.power_cuts += 1
            self._power_up()
            return bytes(out)
        if self._reboot_requested:  # after the answer that acknowledged it
            self._reboot_requested = False
            self._power_up()
        return bytes(out)

    def _receive(self, data: bytes, out: bytearray) -> None:
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
        if name == "SWUpdate.Status":
            return self.status(), None
        if name == "SWUpdate.Confirm":
            return self._confirm(cmd.args["section"]), None
        if name == "Sys.Reboot":
            self._reboot_requested = True
            return None, None
        if name == "Sys.GetInfo":
            return self.info(), None
        if name == "Sys.SetBaud":
            baud = cmd.args["baud"]
            if baud not in self.profile.bauds:
                raise Refusal(Status.BAD_REQUEST, f"baud {baud} is not one of {list(self.profile.bauds)}")
            self.requested_baud = baud  # the endpoint switches once this answer is on the wire
            return {"baud": baud}, None
        if name == "SWUpdate.BlockDigests":
            return self._block_digests(cmd.args), None
        raise Refusal(Status.NOT_IMPLEMENTED, f"command {cmd.cmd!r} is not served by this device")

    # ------------------------------------------------------------ methods

    def list_sections(self) -> list[dict[str, Any]]:
        return [
            {"section": s.name, "version": self._running_slot(s).version, "writable": s.writable}
            for s in self.profile.sections
        ]

    def info(self) -> dict[str, Any]:
        """What this device can afford, for the host to adapt to."""
        p = self.profile
        return {
            "max_frame": p.max_frame,
            "chunk": p.chunk,
            "window": self._window(),
            "block": p.sector_size,
            "encodings": ["deflate"] if p.deflate_window_bits else [],
            "deflate_window_bits": p.deflate_window_bits,
            "bauds": list(p.bauds),
        }

    def _running_offset(self, section: SectionSpec) -> int:
        return section.slot_offset(self.running[section.name]) if section.dual_slot else section.offset

    def _block_digests(self, args: dict[str, Any]) -> dict[str, Any]:
        """First 8 bytes of the SHA-256 of each block of the running image, `count` from block `offset`."""
        section = self._section(args["section"])
        block = self.profile.sector_size
        total = section.size // block
        first, count = args.get("offset", 0), args.get("count", MAX_DIGESTS)
        if not (0 <= first <= total and 0 < count <= MAX_DIGESTS):
            raise Refusal(Status.BAD_REQUEST, f"offset must be 0..{total} and count 1..{MAX_DIGESTS}")
        base = self._running_offset(section)
        digests = b"".join(
            hashlib.sha256(self.flash.read(base + i * block, block)).digest()[:8]
            for i in range(first, min(total, first + count))
        )
        return {"block": block, "offset": first, "total": total, "digests": base64.b64encode(digests).decode()}

    def _running_slot(self, section: SectionSpec) -> SlotState:
        return self.meta.sections[section.name].slots[self.running[section.name]]

    def status(self) -> list[dict[str, Any]]:
        out = []
        for s in self.profile.sections:
            state = self.meta.sections[s.name]
            slots = [
                {"slot": i, "version": x.version, "size": x.size, "sha256": x.sha256.hex() if x.size else None}
                for i, x in enumerate(state.slots[: 2 if s.dual_slot else 1])
            ]
            out.append({
                "section": s.name,
                "writable": s.writable,
                "slots": slots,
                "running": self.running[s.name],
                "active": state.active,
                "pending": state.pending,
                "trial_boots_left": state.tries,
                "confirmed": self.running[s.name] == state.active,
            })
        return out

    def _section(self, name: str) -> SectionSpec:
        section = self.profile.section(name)
        if section is None:
            raise Refusal(Status.NOT_FOUND, f"no section named {name!r}")
        return section

    def _confirm(self, name: str) -> dict[str, Any]:
        section = self._section(name)
        state = self.meta.sections[name]
        running = self.running[name]
        if section.dual_slot and state.pending is not None and running == state.pending:
            state.active, state.pending, state.tries = running, None, 0
            self._flash_op(self.meta_store.save, self.meta)
        elif running != state.active:
            raise Refusal(Status.CONFLICT, f"section {name!r} runs slot {running}, which can no longer be confirmed")
        return {"section": name, "slot": state.active, "version": state.slots[state.active].version}

    def _check_sig(self, section: SectionSpec, sig: dict[str, str]) -> None:
        alg = sig["alg"]
        if alg not in signing.ALGS:
            raise Refusal(Status.UNSUPPORTED, f"unsupported sig.alg {alg!r} (supported: {', '.join(signing.ALGS)})")
        if alg == signing.SHA256:
            if not HEX64.fullmatch(sig["v"]):
                raise Refusal(Status.BAD_REQUEST, "sig.v must be the 64 hex digits of a SHA-256 digest")
            if section.require_signature:
                raise Refusal(
                    Status.FORBIDDEN, f"section {section.name!r} accepts only images signed by a trusted key, not sha256"
                )
            return
        try:
            signing.decode_signature(alg, sig["v"])
        except ValueError as exc:
            raise Refusal(Status.BAD_REQUEST, str(exc)) from None
        if not any(signing.alg_of(k) == alg for k in self.trusted_keys):
            raise Refusal(Status.INTEGRITY, f"this device trusts no key of type {alg}")

    def _check_integrity(
        self, section: SectionSpec, size: int, sig: dict[str, str], version: str | None, digest: bytes
    ) -> None:
        """The whole image is in: does it match sig (digest, or a trusted signature over it)?"""
        if sig["alg"] == signing.SHA256:
            if digest.hex() != sig["v"].lower():
                raise Refusal(Status.INTEGRITY, "SHA-256 of the image does not match sig.v")
            return
        message = signing.signed_message(section.name, version or "", size, digest)
        verdict = signing.verify(self.trusted_keys, sig["alg"], signing.decode_signature(sig["alg"], sig["v"]), message)
        if not verdict.ok:
            raise Refusal(Status.INTEGRITY, verdict.reason)

    def _check_version(self, section: SectionSpec, version: str | None, force: bool) -> bool:
        """Anti-downgrade; True when the same version already runs and nothing is to be written."""
        if section.allow_downgrade:
            return False
        if version is None:
            raise Refusal(Status.BAD_REQUEST, f"section {section.name!r} refuses downgrades: give a version")
        new = parse_version(version)
        if new is None:
            raise Refusal(Status.BAD_REQUEST, f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        current_text = self.meta.sections[section.name].slots[self.meta.sections[section.name].active].version
        current = parse_version(current_text)
        if current is None:
            return False  # nothing comparable installed (factory): any version may come
        if new < current:
            raise Refusal(
                Status.PRECONDITION_FAILED,
                f"downgrade of {section.name!r} from {current_text} to {version} refused by policy",
            )
        return new == current and not force

    def _target_slot(self, section: SectionSpec) -> int:
        if not section.dual_slot:
            return 0
        state = self.meta.sections[section.name]
        running = self.running[section.name]
        if running != state.active:
            raise Refusal(
                Status.CONFLICT,
                f"section {section.name!r} runs an unconfirmed trial image: confirm it or reboot to revert first",
            )
        return 1 - state.active

    def _update(self, cmd: env.Command, frame: PendingFrame) -> tuple[Any, bytes | None]:
        args = cmd.args
        section = self._section(args["section"])
        if not section.writable:
            raise Refusal(Status.FORBIDDEN, f"section {section.name!r} is not writable")
        sig = args["sig"]
        self._check_sig(section, sig)
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
        encoding = args.get("encoding")
        if encoding is not None and (encoding not in ENCODINGS or not self.profile.deflate_window_bits):
            raise Refusal(Status.UNSUPPORTED, f"unsupported encoding {encoding!r} (supported: {', '.join(self.info()['encodings']) or 'none'})")
        keep = self._keep_bitmap(args.get("keep"), size)
        if self._check_version(section, version, bool(args.get("force", False))):
            return {"unchanged": True, "msg": f"{section.name} already runs version {version}"}, None
        slot = self._target_slot(section)
        if ("blob" in args) and (encoding or keep):
            raise Refusal(Status.BAD_REQUEST, "encoding and keep go with a streamed image (size), not blob")
        if "blob" in args:
            self._check_integrity(section, size, sig, version, hashlib.sha256(image).digest())  # before writing
            self._abandon("superseded by an inline Update")
            t = self._open_transfer(cmd.id, section, size, sig, version, slot, resume=False)
            self._accept(t, image)
            return self._finish(t), None  # raises Refusal on failure
        key = self._transfer_key(section, size, sig, version, slot)
        if self.transfer is None and self._finished is not None and self._finished[0] == key:
            return self._finished[1], None  # its answer was lost: say it again, write nothing
        if self.transfer is not None and self.transfer.key == key:
            t = self.transfer  # the host repeated the command: a new session from the last whole sector
            t.cmd_id, t.frame, t.nak_sent = cmd.id, frame, False
            self._restart_session(t)
        else:
            self._abandon("superseded by a new Update")
            t = self._open_transfer(cmd.id, section, size, sig, version, slot, args.get("resume", True), key)
            t.frame = frame
            self.transfer = t
        t.encoding, t.keep = encoding, keep
        self._new_stream(t)
        if t.next_offset >= size:
            self.transfer = None
            return self._finish(t), None
        return None, self._ready(t)

    def _keep_bitmap(self, text: Any, size: int) -> bytes:
        if text is None:
            return b""
        block = self.profile.sector_size
        try:
            keep = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal(Status.BAD_REQUEST, "keep is not valid base64") from None
        blocks = -(-size // block)
        if len(keep) != -(-blocks // 8):
            raise Refusal(Status.BAD_REQUEST, f"keep must hold one bit for each of the {blocks} blocks of {block} bytes")
        if size % block and keep[(blocks - 1) // 8] >> ((blocks - 1) % 8) & 1:
            raise Refusal(Status.BAD_REQUEST, "the last, partial block cannot be kept")
        return keep

    def _new_stream(self, t: Transfer) -> None:
        """A stream (re)starts at t.next_offset: DATA offsets count from there."""
        t.inflater = zlib.decompressobj(-self.profile.deflate_window_bits) if t.encoding == "deflate" else None
        t.source_offset = self._running_offset(t.section)
        self._copy_kept(t)
        t.stream_offset = t.acked = t.next_offset

    def _restart_session(self, t: Transfer) -> None:
        staged = self.staging.staged_bytes(t.size)
        t.next_offset, t.carry = staged or 0, bytearray()
        if staged is None:
            self._flash_op(self.staging.start, t.key, t.size, t.section.name)

    @staticmethod
    def _transfer_key(section: SectionSpec, size: int, sig: dict[str, Any], version: str | None, slot: int) -> bytes:
        text = json.dumps([section.name, slot, size, sig["alg"], sig["v"].lower(), version])
        return hashlib.sha256(text.encode()).digest()

    def _open_transfer(
        self,
        cmd_id: int,
        section: SectionSpec,
        size: int,
        sig: dict[str, str],
        version: str | None,
        slot: int,
        resume: bool,
        key: bytes | None = None,
    ) -> Transfer:
        key = key or self._transfer_key(section, size, sig, version, slot)
        xfer, self._next_xfer = self._next_xfer, self._next_xfer % 0xFFFF + 1
        data_offset = section.slot_offset(slot) if section.dual_slot else self.staging.data_offset
        header = self.staging.read_header()
        offset = self.staging.staged_bytes(size) if resume and header is not None and header[0] == key else None
        if offset is None:
            state = self.meta.sections[section.name]
            if section.dual_slot and state.pending == slot:  # a pending image is about to be overwritten
                state.pending, state.tries = None, 0
                self._flash_op(self.meta_store.save, self.meta)
            self._flash_op(self.staging.start, key, size, section.name)
            offset = 0
        return Transfer(xfer, cmd_id, key, section, size, sig, version, slot, data_offset, offset)

    def _window(self) -> int:
        return self.profile.chunk * self.profile.buffers

    def _ready(self, t: Transfer) -> bytes:
        t.acked = t.next_offset
        prefix = self.staging.digest(t.data_offset, t.next_offset - len(t.carry), tail=bytes(t.carry))
        return encode_frame(ReadyFrame(t.xfer, t.next_offset, self.profile.chunk, self._window(), prefix))

    # ------------------------------------------------------------ streamed data

    def _on_data(self, f: DataFrame) -> bytes:
        t = self.transfer
        if t is None or f.xfer != t.xfer:
            return b""  # a stale transfer's chunk: nothing to say
        if f.offset != t.stream_offset:
            if f.offset > t.stream_offset and (not t.nak_sent or not f.data):
                # One NAK per gap, or every chunk in flight would rewind the host; an empty
                # DATA (the host's probe after a burst) always learns where the gap is.
                t.nak_sent = True
                t.acked = t.stream_offset
                return encode_frame(AckFrame(t.xfer, t.stream_offset, nak=True))
            if f.offset < t.stream_offset:
                t.acked = t.stream_offset
                return encode_frame(AckFrame(t.xfer, t.stream_offset))  # duplicate: harmless
            return b""
        t.nak_sent = False
        t.stream_offset += len(f.data)
        try:
            self._feed(t, self._inflate(t, f.data) if t.inflater is not None else [f.data])
        except Refusal as exc:
            return self._end_transfer(t, exc.status, exc.msg)
        if t.next_offset < t.size:
            # Every other chunk is enough: the host still has half its window to send meanwhile.
            if t.stream_offset - t.acked < max(self.profile.chunk, self._window() // 2):
                return b""
            t.acked = t.stream_offset
            return encode_frame(AckFrame(t.xfer, t.stream_offset))
        out = encode_frame(AckFrame(t.xfer, t.stream_offset))
        try:
            result = self._finish(t)
        except Refusal as exc:
            return out + self._end_transfer(t, exc.status, exc.msg)
        return out + self._end_transfer(t, Status.OK, None, result)

    def _inflate(self, t: Transfer, data: bytes) -> Iterator[bytes]:
        """Inflate in bounded steps: a small frame may stand for a lot of image."""
        step = self.profile.sector_size
        try:
            out = t.inflater.decompress(data, step)
            while out:
                yield out
                out = t.inflater.decompress(t.inflater.unconsumed_tail, step) if t.inflater.unconsumed_tail else b""
        except zlib.error as exc:
            raise Refusal(Status.BAD_REQUEST, f"the deflate stream is corrupt ({exc})") from None

    def _feed(self, t: Transfer, pieces: Iterable[bytes]) -> None:
        """Image bytes from the stream go to the next block that is not kept."""
        sector = self.profile.sector_size
        for data in pieces:
            pos = 0
            while pos < len(data):
                if t.next_offset >= t.size:
                    raise Refusal(Status.BAD_REQUEST, "the stream holds more bytes than the image")
                take = min(len(data) - pos, sector - t.next_offset % sector, t.size - t.next_offset)
                self._accept(t, data[pos : pos + take])
                pos += take
                self._copy_kept(t)

    def _copy_kept(self, t: Transfer) -> None:
        """Copy the kept blocks at t.next_offset from the running image (they are not on the wire)."""
        sector = self.profile.sector_size
        while t.next_offset < t.size and t.next_offset % sector == 0 and t.keep:
            index = t.next_offset // sector
            if not t.keep[index // 8] >> (index % 8) & 1:
                return
            n = min(sector, t.size - t.next_offset)
            self._accept(t, self.flash.read(t.source_offset + t.next_offset, n))

    def _accept(self, t: Transfer, data: bytes) -> None:
        """Program `data` at t.next_offset into staging, erasing sectors as they are entered."""
        sector, align = self.profile.sector_size, self.profile.write_align
        pos = 0
        while pos < len(data):
            at = t.next_offset
            if at % sector == 0 and not t.carry:
                self._flash_op(self.flash.erase, t.data_offset + at, sector)
            take = min(len(data) - pos, sector - at % sector)
            piece = data[pos : pos + take]
            pos += take
            t.next_offset += take
            end_of_image = t.next_offset == t.size
            buf = bytes(t.carry) + piece
            whole = len(buf) - (0 if end_of_image else len(buf) % align)
            if whole:
                start = t.next_offset - len(buf)
                self._flash_op(self.flash.program, t.data_offset + start, buf[:whole] + b"\xff" * (-whole % align))
            t.carry = bytearray(buf[whole:])
            if t.next_offset % sector == 0 or end_of_image:
                self._flash_op(self.staging.mark_sector_done, (t.next_offset - 1) // sector)

    def _finish(self, t: Transfer) -> dict[str, Any] | None:
        """Verify the staged image, then install it; the running image changes only now."""
        digest = self.staging.digest(t.data_offset, t.size)  # read back: what flash holds is checked
        try:
            self._check_integrity(t.section, t.size, t.sig, t.version, digest)
        except Refusal:
            self._flash_op(self.staging.clear)
            raise
        state = self.meta.sections[t.section.name]
        version = t.version if t.version is not None else state.slots[self.running[t.section.name]].version
        new = SlotState(version, t.size, digest)
        if t.section.dual_slot:
            # One metadata write makes it pending; the bootloader tries it at the next boot.
            state.slots[t.slot], state.pending, state.tries = new, t.slot, t.section.trial_boots
            self._flash_op(self.meta_store.save, self.meta)
            self._flash_op(self.staging.clear)
            return {"slot": t.slot, "pending": True}
        state.slots[0] = new
        self.meta.install_section = t.section.name  # a power cut from here on is finished at boot
        self._flash_op(self.meta_store.save, self.meta)
        self._flash_op(self._copy_staging_to, t.section, t.size)
        self.meta.install_section = None
        self._flash_op(self.meta_store.save, self.meta)
        self._flash_op(self.staging.clear)
        return None

    def _copy_staging_to(self, section: SectionSpec, size: int) -> None:
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

    def _end_transfer(self, t: Transfer, status: Status, msg: str | None, result: Any = None) -> bytes:
        """Answer the Update that opened `t`, then the rest of its frame."""
        if self.transfer is t:
            self.transfer = None
        self._finished = (t.key, result) if status == Status.OK else None
        frame = t.frame
        if frame is None:
            return b""
        frame.answers.append(env.answer(t.cmd_id, status, result, msg=msg))
        return self._run(frame)
