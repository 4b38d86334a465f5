"""Malformed envelopes, answered by the rules of protocol/SPEC.md section 5.3, one by one.

Each case goes to a fresh device in one frame followed by a good ListSections: the bad one
gets exactly the answer the SPEC gives it, the good one is served, and the flash is untouched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from uartupdate.core.framing import FrameDecoder, FrameError, JsonFrame, encode_frame
from uartupdate.emulator import make_device

ADDRESS = "//api.cesanta.com/device_123"
LIST = "/v1/SWUpdate.ListSections"
GOOD = json.dumps({"v": 1, "src": "//t", "cmds": [{"cmd": LIST, "id": 999}]}).encode()


def exchange(payload: bytes) -> tuple[list[dict[str, Any]], bool]:
    """(the answers to `payload`, flash unchanged), after checking the device still serves."""
    device = make_device()
    try:
        before = device.flash.read(0, device.flash.size)
        out = device.receive(encode_frame(JsonFrame(payload)) + encode_frame(JsonFrame(GOOD)))
        frames = FrameDecoder(1 << 20).feed(out)
        assert not any(isinstance(f, FrameError) for f in frames)
        envs = [json.loads(f.payload) for f in frames]
        assert envs, "not even the good request was answered"
        last = envs.pop()
        assert last["resp"][0]["id"] == 999 and last["resp"][0]["status"] == 0  # the device keeps serving
        unchanged = device.flash.read(0, device.flash.size) == before
        return envs, unchanged
    finally:
        device.flash.close()


def frame_level(payload: bytes, status: int, with_dst: bool) -> None:
    envs, unchanged = exchange(payload)
    assert len(envs) == 1, envs
    resp = envs[0]
    assert resp["src"] == ADDRESS and resp["v"] == 1
    assert resp["resp"] == [{"id": 0, "status": status, "status_msg": resp["resp"][0]["status_msg"]}]
    assert resp["resp"][0]["status_msg"]
    assert ("dst" in resp) == with_dst
    assert unchanged


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def base(**change: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"v": 1, "src": "//t", "cmds": [{"cmd": LIST, "id": 5}]}
    for k, v in change.items():
        if v is ...:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc0\xaf",  # overlong encoding of '/'
        b'{"v":1,"src":"\x80","cmds":[]}',  # a lone continuation byte inside a string
        b'{"v":1,"src":"\xed\xa0\x80","cmds":[]}',  # a UTF-8-encoded surrogate
        b"\xff\xfe{\x00}\x00",  # UTF-16
        b'{"v":1,"src":"//t","cmds":[{"cmd":"\\ud800","id":5}]}',  # a lone surrogate escape
    ],
)
def test_not_utf8(payload: bytes) -> None:
    frame_level(payload, 400, with_dst=False)


@pytest.mark.parametrize(
    "payload",
    [b"", b" ", b"{", b"}", b"nul", b'{"v":1,}', b"\xef\xbb\xbf" + GOOD, b"{'v':1}", b'{"v":1 "src":"x"}', GOOD + b"x",
     b'{"v":NaN,"src":"x","cmds":[]}'[:-3]],
)
def test_not_json(payload: bytes) -> None:
    frame_level(payload, 400, with_dst=False)


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"x"', b"null", b"true", b"[{}]"])
def test_not_an_object(payload: bytes) -> None:
    frame_level(payload, 400, with_dst=False)


@pytest.mark.parametrize("v", [2, 0, -1, "1", 1.0, True, None, [1], {"v": 1}, 2**64, ...])
def test_version_other_than_1(v: Any) -> None:
    frame_level(j(base(v=v)), 505, with_dst=True)


@pytest.mark.parametrize("src", [None, 5, [], {}, True, ...])
def test_src_missing_or_not_a_string(src: Any) -> None:
    frame_level(j(base(src=src)), 400, with_dst=False)


@pytest.mark.parametrize("dst", [5, [], {}, True])
def test_dst_not_a_string(dst: Any) -> None:
    frame_level(j(base(dst=dst)), 400, with_dst=True)


@pytest.mark.parametrize("resp", [[], [{"id": 1, "status": 0}], None, "x"])
def test_both_cmds_and_resp(resp: Any) -> None:
    frame_level(j(base(resp=resp)), 400, with_dst=True)


@pytest.mark.parametrize("cmds", [..., None, [], {}, "ListSections", 5, [1], [[]], [None], [{"cmd": LIST}]])
def test_cmds_missing_empty_or_malformed(cmds: Any) -> None:
    frame_level(j(base(cmds=cmds)), 400, with_dst=True)


@pytest.mark.parametrize("cid", [0, -1, 2**53, 2**64, -(2**53), 1.5, 1.0, "1", True, False, None, [1], {"a": 1}])
def test_ids_outside_1_to_2_53_minus_1_refuse_the_whole_frame(cid: Any) -> None:
    frame_level(j(base(cmds=[{"cmd": LIST, "id": 1}, {"cmd": LIST, "id": cid}])), 400, with_dst=True)


def test_id_written_with_an_exponent_or_fraction() -> None:
    frame_level(b'{"v":1,"src":"//t","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":1e3}]}', 400, with_dst=True)
    frame_level(b'{"v":1,"src":"//t","cmds":[{"cmd":"/v1/SWUpdate.ListSections","id":5.0}]}', 400, with_dst=True)


def per_command(env: dict[str, Any]) -> list[dict[str, Any]]:
    envs, unchanged = exchange(j(env))
    assert unchanged and len(envs) == 1
    return envs[0]["resp"]


@pytest.mark.parametrize("cmd", [..., None, 5, [], {}, True])
def test_cmd_missing_or_not_a_string_is_answered_for_that_command(cmd: Any) -> None:
    bad: dict[str, Any] = {"id": 6}
    if cmd is not ...:
        bad["cmd"] = cmd
    answers = per_command(base(cmds=[{"cmd": LIST, "id": 5}, bad, {"cmd": LIST, "id": 7}]))
    assert [a["id"] for a in answers] == [5, 6, 7]  # in the order of cmds
    assert [a["status"] for a in answers] == [0, 400, 0]
    assert "cmd" in answers[1]["status_msg"]


@pytest.mark.parametrize("args", [None, [], "x", 5, True, [{}]])
def test_args_not_an_object_is_answered_for_that_command(args: Any) -> None:
    answers = per_command(base(cmds=[{"cmd": LIST, "id": 5, "args": args}, {"cmd": LIST, "id": 6}]))
    assert [a["status"] for a in answers] == [400, 0]
    assert "args" in answers[0]["status_msg"]


@pytest.mark.parametrize(
    "args",
    [
        {"section": 5, "sig": {"alg": "sha256", "v": "00" * 32}, "size": 10},
        {"section": "config", "sig": "sha256", "size": 10},
        {"section": "config", "sig": {"alg": "sha256", "v": 5}, "size": 10},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": "10"},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": 10.5},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": True},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "blob": 5},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": 10, "version": 2},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": 10, "resume": "no"},
        {"section": "config", "sig": {"alg": "sha256", "v": "00" * 32, "x": 1}, "size": 10},
        {"section": ["config"], "sig": {"alg": "sha256", "v": "00" * 32}, "size": 10},
    ],
)
def test_arguments_of_the_wrong_type(args: dict[str, Any]) -> None:
    answers = per_command(base(cmds=[{"cmd": "/v1/SWUpdate.Update", "id": 5, "args": args}, {"cmd": LIST, "id": 6}]))
    assert [a["status"] for a in answers] == [400, 0]


def test_duplicate_ids_the_first_runs_the_second_is_refused() -> None:
    answers = per_command(base(cmds=[{"cmd": LIST, "id": 5}, {"cmd": LIST, "id": 5}, {"cmd": "Nope.X", "id": 5},
                                     {"cmd": LIST, "id": 8}]))
    assert [(a["id"], a["status"]) for a in answers] == [(5, 0), (5, 400), (5, 400), (8, 0)]
    assert "duplicate" in answers[1]["status_msg"]


def test_nesting_at_the_limit_is_served_and_one_deeper_is_refused() -> None:
    def nest(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    assert per_command(base(key=nest(31)))[0]["status"] == 0
    frame_level(j(base(key=nest(32))), 400, with_dst=True)
    frame_level(b'{"v":1,"src":"//t","x":' + b"{\"a\":" * 10_000 + b"1" + b"}" * 10_000 + b"}", 400, with_dst=False)


def test_very_long_json_within_the_frame_is_served_and_beyond_it_is_413() -> None:
    pad = " " * 60_000
    answers = per_command(json.loads(j(base())) | {"note": "x" * 60_000})
    assert answers[0]["status"] == 0
    envs, unchanged = exchange(GOOD[:-1] + pad.encode() + b"}")  # whitespace is JSON too
    assert envs[0]["resp"][0]["status"] == 0 and unchanged
    envs, unchanged = exchange(j(base(note="x" * 70_000)))  # more than the device's 64 KiB frame
    assert envs[0]["resp"] == [{"id": 0, "status": 413, "status_msg": envs[0]["resp"][0]["status_msg"]}]
    assert "dst" not in envs[0] and unchanged


def test_huge_numbers_are_judged_not_crashed_on() -> None:
    frame_level(b'{"v":1,"src":"//t","cmds":[{"cmd":"x","id":' + b"9" * 5000 + b"}]}", 400, with_dst=False)
    frame_level(b'{"v":1e999,"src":"//t","cmds":[]}', 505, with_dst=True)
    answers = per_command({"v": 1, "src": "//t", "cmds": [{"cmd": "/v1/SWUpdate.Update", "id": 5, "args": {
        "section": "config", "sig": {"alg": "sha256", "v": "00" * 32}, "size": 2**200}}, {"cmd": LIST, "id": 6}]})
    assert [a["status"] for a in answers] == [413, 0]
