"""protocol/SPEC.md §5, §7.1: the envelope and ListSections' shape and types."""

from __future__ import annotations

from uartupdate.core.framing import JsonFrame

ADDRESS_SRC = "//hil/host"


def test_list_sections_shape_and_types(board) -> None:
    sections = board.sections()
    assert isinstance(sections, list) and sections, "ListSections must list at least one section"
    names = []
    for item in sections:
        assert isinstance(item, dict)
        assert set(item) == {"section", "version", "writable"}, item
        assert isinstance(item["section"], str) and 1 <= len(item["section"].encode()) <= 16, item
        assert isinstance(item["version"], str) and len(item["version"].encode()) <= 32, item
        assert isinstance(item["writable"], bool), item
        names.append(item["section"])
    assert len(set(names)) == len(names), f"section names repeat: {names}"


def test_list_sections_matches_the_target(board, target) -> None:
    listed = {s["section"]: s["writable"] for s in board.sections()}
    for s in target.sections:
        assert s.name in listed, f"the target file names {s.name!r}, the board does not list it"
        assert listed[s.name] == s.writable, f"{s.name}: writable is {listed[s.name]}, the target says {s.writable}"
    if target.strict_sections:
        assert sorted(listed) == sorted(s.name for s in target.sections)


def test_list_sections_is_stable(board) -> None:
    assert board.sections() == board.sections()


def test_response_envelope(board) -> None:
    req = {"v": 1, "src": ADDRESS_SRC, "cmds": [{"cmd": "/v1/SWUpdate.ListSections", "id": 123}]}
    if board.target.address:
        req["dst"] = board.target.address
    resp = board.client.call(_keyed(board, req))
    assert resp["v"] == 1
    assert isinstance(resp["src"], str) and resp["src"]
    if board.target.address:
        assert resp["src"] == board.target.address
    assert resp["dst"] == ADDRESS_SRC
    assert resp["resp"] == [{"id": 123, "status": 0, "resp": board.sections()}]


def test_prefix_v1_is_optional(board) -> None:
    req = _keyed(board, {"v": 1, "src": ADDRESS_SRC, "cmds": [{"cmd": "SWUpdate.ListSections", "id": 9, "args": {}}]})
    assert board.client.call(req)["resp"][0]["status"] == 0


def test_wrong_envelope_version_is_505(board) -> None:
    req = _keyed(board, {"v": 2, "src": ADDRESS_SRC, "cmds": [{"cmd": "/v1/SWUpdate.ListSections", "id": 5}]})
    resp = board.client.call(req)
    assert len(resp["resp"]) == 1
    answer = resp["resp"][0]
    assert answer["id"] == 0 and answer["status"] == 505 and answer["status_msg"]


def test_payload_that_is_not_json_is_400(board) -> None:
    resp = board.client._exchange(JsonFrame(b"{this is not json"), set(), board.client.timeout)
    assert resp["resp"][0]["id"] == 0 and resp["resp"][0]["status"] == 400
    assert "dst" not in resp


def test_request_for_another_device_is_not_answered(board) -> None:
    import pytest

    from uartupdate.host.errors import LinkTimeout

    req = _keyed(board, {"v": 1, "src": ADDRESS_SRC, "dst": "//hil/nobody-has-this-address",
                         "cmds": [{"cmd": "/v1/SWUpdate.ListSections", "id": 77}]})
    client = board.client
    saved = client.retries
    client.retries = 0
    try:
        with pytest.raises(LinkTimeout):
            client.call(req, timeout=0.5)
    finally:
        client.retries = saved
    assert board.sections()  # and it still serves


def _keyed(board, req: dict) -> dict:
    key = board.target.key()
    return {**req, "key": key} if key else req
