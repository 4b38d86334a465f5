"""protocol/SPEC.md §3.3, §5.2: garbage on the line, and several commands in one frame."""

from __future__ import annotations

import base64
import hashlib
import random

from uartupdate.core.framing import encode_frame, JsonFrame

SRC = "//hil/host"


def _noise(rng: random.Random, n: int, zeros: bool = True) -> bytes:
    data = bytearray(rng.randrange(1, 256) for _ in range(n))
    if zeros:
        for i in rng.sample(range(n), n // 50):
            data[i] = 0
    return bytes(data)


def _envelope(board, cmds: list) -> dict:
    env = {"v": 1, "src": SRC, "cmds": cmds}
    if board.target.address:
        env["dst"] = board.target.address
    key = board.target.key()
    return {**env, "key": key} if key else env


def test_garbage_then_a_delimiter_costs_nothing(board) -> None:
    """Noise that ends in 00 is dropped frame by frame: the next request is answered at the first try."""
    expected = board.sections()
    client = board.client
    client.port.write(_noise(random.Random(1), 3000) + b"\x00\x00")
    client.port.flush()
    saved = client.retries
    client.retries = 0
    try:
        assert client.list_sections() == expected
    finally:
        client.retries = saved


def test_garbage_without_a_delimiter_spoils_one_frame_only(board) -> None:
    """Noise with no 00 of its own runs into the next frame; the retry is answered."""
    expected = board.sections()
    client = board.client
    client.port.write(_noise(random.Random(2), 500, zeros=False))
    client.port.flush()
    saved_retries, saved_timeout = client.retries, client.timeout
    client.retries, client.timeout = 3, min(client.timeout, 1.0)
    try:
        assert client.list_sections() == expected
    finally:
        client.retries, client.timeout = saved_retries, saved_timeout


def test_corrupted_frame_is_dropped_silently(board) -> None:
    frame = bytearray(encode_frame(JsonFrame(b'{"v":1,"src":"x","cmds":[{"cmd":"SWUpdate.ListSections","id":1}]}')))
    frame[10] ^= 0x01  # one flipped bit: the CRC no longer matches
    board.client.port.write(bytes(frame))
    board.client.port.flush()
    assert board.sections()  # the board did not answer the broken frame, and still serves


def test_several_commands_in_one_frame_are_answered_in_order(board) -> None:
    data = b"one frame, many commands"
    sig = {"alg": "sha256", "v": hashlib.sha256(data).hexdigest()}
    cmds = [
        {"cmd": "/v1/SWUpdate.ListSections", "id": 11},
        {"cmd": "/v1/SWUpdate.NoSuchMethod", "id": 12},
        {"cmd": "/v1/SWUpdate.Update", "id": 13,
         "args": {"section": "nosuch-section", "sig": sig, "blob": base64.b64encode(data).decode()}},
        {"cmd": "/v1/SWUpdate.ListSections", "id": 11},  # a repeated id: 400 for this command only
        {"cmd": "/v1/SWUpdate.ListSections", "id": 14, "args": {"unexpected": 1}},
        {"cmd": "/v1/SWUpdate.ListSections", "id": 15},
    ]
    resp = board.client.call(_envelope(board, cmds))
    answers = resp["resp"]
    assert [a["id"] for a in answers] == [11, 12, 13, 11, 14, 15]
    assert [a["status"] for a in answers] == [0, 501, 404, 400, 400, 0]
    assert answers[0]["resp"] == answers[5]["resp"] == board.sections()
    for a in answers:
        assert ("status_msg" in a) == (a["status"] != 0), a
        assert ("resp" in a) == (a["status"] == 0), a


def test_one_bad_command_object_refuses_the_whole_frame(board) -> None:
    cmds = [{"cmd": "/v1/SWUpdate.ListSections", "id": 1}, {"cmd": "/v1/SWUpdate.ListSections", "id": 1.5}]
    resp = board.client.call(_envelope(board, cmds))
    assert [(a["id"], a["status"]) for a in resp["resp"]] == [(0, 400)]
