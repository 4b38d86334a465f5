"""The JSON command envelope of the SWUpdate spec: `v`, `src`, `dst`, `cmds` / `resp`.

Pure functions: building requests and responses, and checking what arrives
against the rules of protocol/SPEC.md ("Envelope").
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
BROADCAST = "*"
MAX_ID = 2**53 - 1
#: The id of a frame-level answer: the frame could not be read far enough to know its ids.
FRAME_ID = 0


class Status(enum.IntEnum):
    """`status` values; every non-zero answer also carries a `status_msg`."""

    OK = 0
    BAD_REQUEST = 400  # malformed envelope or arguments
    UNAUTHORIZED = 401  # missing or wrong access key
    FORBIDDEN = 403  # section is not writable
    NOT_FOUND = 404  # unknown section
    TIMEOUT = 408  # a transfer stalled
    CONFLICT = 409  # the section's state forbids it now (an unconfirmed trial image runs)
    PRECONDITION_FAILED = 412  # the section's policy refuses it (a downgrade)
    TOO_LARGE = 413  # image larger than the section, or frame larger than the maximum
    UNSUPPORTED = 415  # unknown `sig.alg`
    INTEGRITY = 422  # digest or signature does not match the image
    ABORTED = 499  # the host aborted the transfer
    INTERNAL = 500  # flash failure
    NOT_IMPLEMENTED = 501  # unknown command
    BAD_VERSION = 505  # envelope `v` is not 1


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def request(src: str, dst: str | None, cmds: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"v": PROTOCOL_VERSION, "src": src}
    if dst is not None:
        env["dst"] = dst
    if key is not None:
        env["key"] = key
    env["cmds"] = cmds
    return env


def command(cmd: str, id: int, args: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"cmd": cmd, "id": id}
    if args is not None:
        c["args"] = args
    return c


def answer(id: int, status: int = Status.OK, result: Any = None, msg: str | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"id": id, "status": int(status)}
    if result is not None:
        a["resp"] = result
    if status != Status.OK:
        a["status_msg"] = msg or Status(status).name.lower().replace("_", " ")
    return a


def response(src: str, dst: str | None, answers: list[dict[str, Any]]) -> dict[str, Any]:
    env: dict[str, Any] = {"v": PROTOCOL_VERSION, "src": src}
    if dst is not None:
        env["dst"] = dst
    env["resp"] = answers
    return env


class EnvelopeError(Exception):
    """The envelope as a whole cannot be served: answered at frame level (id 0)."""

    def __init__(self, status: Status, msg: str, src: str | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.src = src


@dataclass
class Command:
    cmd: str
    id: int
    args: dict[str, Any]


@dataclass
class BadCommand:
    """A command whose id is known but which cannot be run: answered with `status`."""

    id: int
    status: Status
    msg: str


@dataclass
class Request:
    src: str
    dst: str | None
    key: Any
    commands: list[Command | BadCommand] = field(default_factory=list)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


MAX_NESTING = 32


def _check_nesting(obj: Any, src: str | None, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise EnvelopeError(Status.BAD_REQUEST, f"JSON nested deeper than {MAX_NESTING} levels", src)
    if isinstance(obj, dict):
        for v in obj.values():
            _check_nesting(v, src, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_nesting(v, src, depth + 1)


def _lone_surrogate(obj: Any) -> bool:
    """Does a string (or a member name) hold a lone surrogate, from an escape such as `\\ud800`?

    Such a string is no Unicode text: it cannot be written back as UTF-8 (an answer that echoes
    it, a version stored in flash), so the envelope counts as not UTF-8 (SPEC 5.3, check 1).
    """
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_request(payload: bytes) -> Request:
    """Parse a request envelope; raises EnvelopeError when no command can be answered."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError(Status.BAD_REQUEST, "envelope is not valid UTF-8") from None
    try:
        env = json.loads(text)
    except RecursionError:
        raise EnvelopeError(Status.BAD_REQUEST, f"JSON nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:
        raise EnvelopeError(Status.BAD_REQUEST, f"envelope is not valid JSON: {exc}") from None
    if "\\u" in text and _lone_surrogate(env):
        raise EnvelopeError(Status.BAD_REQUEST, "envelope is not valid UTF-8: a \\u escape names a lone surrogate")
    if not isinstance(env, dict):
        raise EnvelopeError(Status.BAD_REQUEST, "envelope must be a JSON object")
    src = env.get("src")
    src = src if isinstance(src, str) else None
    _check_nesting(env, src)
    if type(env.get("v")) is not int or env["v"] != PROTOCOL_VERSION:
        raise EnvelopeError(Status.BAD_VERSION, f"unsupported envelope version {env.get('v')!r}, expected 1", src)
    if src is None:
        raise EnvelopeError(Status.BAD_REQUEST, "'src' must be a string", None)
    dst = env.get("dst")
    if dst is not None and not isinstance(dst, str):
        raise EnvelopeError(Status.BAD_REQUEST, "'dst' must be a string", src)
    if "resp" in env:
        raise EnvelopeError(Status.BAD_REQUEST, "a request must not carry 'resp'", src)
    cmds = env.get("cmds")
    if not isinstance(cmds, list) or not cmds:
        raise EnvelopeError(Status.BAD_REQUEST, "'cmds' must be a non-empty array", src)
    req = Request(src=src, dst=dst, key=env.get("key"))
    seen: set[int] = set()
    for c in cmds:
        if not isinstance(c, dict) or not _is_id(c.get("id")):
            raise EnvelopeError(Status.BAD_REQUEST, f"every command needs an integer 'id' in 1..{MAX_ID}", src)
        cid = c["id"]
        if cid in seen:
            req.commands.append(BadCommand(cid, Status.BAD_REQUEST, f"duplicate id {cid} in one frame"))
            continue
        seen.add(cid)
        name, args = c.get("cmd"), c.get("args", {})
        if not isinstance(name, str):
            req.commands.append(BadCommand(cid, Status.BAD_REQUEST, "'cmd' must be a string"))
        elif not isinstance(args, dict):
            req.commands.append(BadCommand(cid, Status.BAD_REQUEST, "'args' must be an object"))
        else:
            req.commands.append(Command(name, cid, args))
    return req


def parse_response(payload: bytes) -> dict[str, Any] | None:
    """A response envelope as a dict, or None when the payload is not one."""
    try:
        env = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(env, dict) or not isinstance(env.get("resp"), list):
        return None
    if b"\\u" in payload and _lone_surrogate(env):
        return None  # not text that can be shown or stored: no answer a host can use
    return env
