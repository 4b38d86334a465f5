"""Images from paths, file:// and http:// URLs, and metadata documents; every bad source refused up front."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from uartupdate.host.client import Client
from uartupdate.host.errors import ImageError
from uartupdate.host.image import open_image


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/truncated.bin":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x01" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    def handler(*args: object, **kwargs: object) -> Handler:
        return Handler(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def write_image(path: Path, size: int = 50_000) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_plain_path_and_file_url(tmp_path: Path) -> None:
    data = write_image(tmp_path / "a.bin")
    for ref in (str(tmp_path / "a.bin"), (tmp_path / "a.bin").as_uri()):
        img = open_image(ref)
        assert img.size == len(data) and img.sha256 == hashlib.sha256(data).digest()
        assert img.read(100, 50) == data[100:150]


def test_http_image_and_metadata_document_with_relative_url(tmp_path: Path, server: str) -> None:
    data = write_image(tmp_path / "fw.bin")
    sig = {"alg": "sha256", "v": hashlib.sha256(data).hexdigest()}
    (tmp_path / "metadata.json").write_text(
        json.dumps({"url": "fw.bin", "size": len(data), "version": "4.2", "sig": sig})
    )
    assert open_image(f"{server}/fw.bin").read(0, len(data)) == data
    img = open_image(f"{server}/metadata.json")
    assert (img.size, img.version, img.sig) == (len(data), "4.2", sig)
    assert img.read(0, len(data)) == data


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"url": "fw.bin", "size": 12}, "its metadata says 12"),
        ({"url": "fw.bin", "sig": {"alg": "sha256", "v": "00" * 32}}, "does not match the sig"),
        ({"url": "missing.bin"}, "does not exist"),
        ({"url": "fw.bin", "colour": "red"}, "unknown keys: colour"),
        ({"url": 5}, "url must be a string"),
        ({"url": "fw.bin", "sig": "abc"}, "sig must be an object"),
    ],
)
def test_bad_metadata_documents_are_refused(tmp_path: Path, doc: dict[str, object], message: str) -> None:
    write_image(tmp_path / "fw.bin")
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ImageError, match=message):
        open_image(tmp_path / "m.json")


def test_http_errors_truncation_and_unreachable_hosts_are_refused(server: str) -> None:
    with pytest.raises(ImageError, match="HTTP 404"):
        open_image(f"{server}/nope.bin")
    with pytest.raises(ImageError, match="truncated|cannot fetch"):
        open_image(f"{server}/truncated.bin")
    with pytest.raises(ImageError, match="cannot reach"):
        open_image("http://127.0.0.1:9/fw.bin", timeout=2)


def test_update_from_metadata_url_records_its_version(tmp_path: Path, server: str) -> None:
    data = write_image(tmp_path / "fw.bin", 70_000)
    (tmp_path / "metadata.json").write_text(json.dumps({"url": "fw.bin", "version": "5.0"}))
    with Client(f"emu://?flash={tmp_path / 'flash.bin'}") as dev:
        dev.update("firmware", f"{server}/metadata.json")
        assert {"section": "firmware", "version": "5.0", "writable": True} in dev.list_sections()
        firmware = dev.port.device.profile.section("firmware")
        assert dev.port.device.flash.read(firmware.offset, len(data)) == data


def test_call_serves_a_blob_url_update_on_the_host(tmp_path: Path) -> None:
    data = write_image(tmp_path / "fw.bin", 30_000)
    (tmp_path / "metadata.json").write_text(json.dumps({"url": "fw.bin", "version": "7"}))
    request = {
        "v": 1,
        "src": "//api.cesanta.com/user_123",
        "dst": "//api.cesanta.com/device_123",
        "cmds": [{"cmd": "/v1/SWUpdate.Update", "id": 123,
                  "args": {"blob_url": (tmp_path / "metadata.json").as_uri(), "section": "firmware", "version": "123"}}],
    }
    with Client("emu://") as dev:
        response = dev.call_with_blob_url(request)
        assert response == {
            "v": 1,
            "src": "//api.cesanta.com/device_123",
            "dst": "//api.cesanta.com/user_123",
            "resp": [{"id": 123, "status": 0}],
        }
        assert {"section": "firmware", "version": "123", "writable": True} in dev.list_sections()
        firmware = dev.port.device.profile.section("firmware")
        assert dev.port.device.flash.read(firmware.offset, len(data)) == data
