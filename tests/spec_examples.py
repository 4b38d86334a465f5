"""The SWUpdate spec's example envelopes, as the golden vectors (protocol/vectors/frames.json) hold them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FRAMES = Path(__file__).resolve().parent.parent / "protocol" / "vectors" / "frames.json"


@cache
def _vectors() -> dict[str, Any]:
    return {v["name"]: v for v in json.loads(FRAMES.read_text())["vectors"]}


def spec_example(name: str) -> dict[str, Any]:
    """'list_sections_request', 'list_sections_response', 'update_request' or 'update_response'."""
    return json.loads(json.dumps(_vectors()[f"spec_{name}"]["frame"]["payload"]))  # a fresh copy each time
