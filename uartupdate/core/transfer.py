"""The host's side of a streamed transfer: which chunk to send next (Go-Back-N with NAK).

Sans-I/O: the caller passes the current time in and gets (offset, length) pairs
to read from the image and send as DATA frames. The device acknowledges the
offset below which it holds every byte; a NAK (one per gap) or a silent
retransmission timeout rewinds sending to the acknowledged offset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransferStats:
    bytes_sent: int = 0  # image bytes put in DATA frames, resends included
    frames_sent: int = 0
    resent_bytes: int = 0
    naks: int = 0
    timeouts: int = 0


class Sender:
    def __init__(
        self, size: int, offset: int, chunk: int, window: int, retransmit_after: float, now: float
    ) -> None:
        if chunk <= 0 or window < chunk:
            raise ValueError("the device advertised a chunk or window the host cannot use")
        self.size = size
        self.chunk = chunk
        self.window = window
        self.retransmit_after = retransmit_after
        self.acked = offset
        self.next = offset
        self._high = offset  # highest offset ever sent, to count resent bytes
        self._last_progress = now
        self.stats = TransferStats()

    @property
    def done(self) -> bool:
        return self.acked >= self.size

    def on_ack(self, offset: int, nak: bool, now: float) -> None:
        if offset > self.acked:
            self.acked = min(offset, self.size)
            self._last_progress = now
        if self.next < self.acked:
            self.next = self.acked
        if nak:
            self.stats.naks += 1
            self.next = self.acked

    def poll(self, now: float) -> list[tuple[int, int]]:
        """Chunks to send now, in order."""
        if self.next > self.acked and now - self._last_progress >= self.retransmit_after:
            self.stats.timeouts += 1
            self.next = self.acked
            self._last_progress = now
        out = []
        while self.next < self.size:
            length = min(self.chunk, self.size - self.next)
            if self.next + length > self.acked + self.window:
                break  # only whole chunks: a short one would cost a header for little data
            out.append((self.next, length))
            if self.next < self._high:
                self.stats.resent_bytes += min(length, self._high - self.next)
            self.stats.bytes_sent += length
            self.stats.frames_sent += 1
            self.next += length
            self._high = max(self._high, self.next)
        return out

    def deadline(self) -> float:
        """When poll() would next act on its own (a retransmission timeout)."""
        return self._last_progress + self.retransmit_after
