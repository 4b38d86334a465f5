"""Errors the host reports; each carries one sentence a user can act on."""

from __future__ import annotations


class UartUpdateError(Exception):
    """Base of every error the host raises on purpose."""

    exit_code = 1


class UsageError(UartUpdateError):
    exit_code = 2


class ImageError(UsageError):
    """The image (file, URL or metadata document) cannot be used."""


class DeviceError(UartUpdateError):
    """The device answered with a non-zero status."""

    exit_code = 1

    def __init__(self, status: int, status_msg: str, cmd: str | None = None) -> None:
        where = f"{cmd}: " if cmd else ""
        super().__init__(f"device refused {where}status {status}: {status_msg}")
        self.status = status
        self.status_msg = status_msg
        self.cmd = cmd


class LinkError(UartUpdateError):
    """The port cannot be opened, vanished, or the device does not answer."""

    exit_code = 3


class LinkTimeout(LinkError):
    pass
