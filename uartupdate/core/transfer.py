"""The host's side of a streamed transfer: which chunk to send next (Go-Back-N with NAK).

Sans-I/O: the caller passes the current time in and gets (offset, length) pairs
to read from the image and send as DATA frames. The device acknowledges the
offset below which it holds every byte; a NAK (one per gap) or a silent
retransmission timeout rewinds sending to the acknowledged offset.

On a noisy line the sender adapts, when asked to (`min_chunk`, `min_retransmit`):

* **chunk size**: a frame of n bytes survives a bit-error rate p with probability about
  (1 - p)^(8n), and after a loss Go-Back-N keeps only the clean frames before it. At a
  bit-error rate of 1e-4 a 2 KiB frame is almost always hit, a 128-byte one seldom.
  Every loss (a NAK or a timeout) halves the chunk, at most once per window of data in
  flight (one burst of noise is one loss), down to `min_chunk`; every run of clean data
  worth GROW_AFTER chunks doubles it again, up to what the device advertised. Lengths stay
  multiples of 4 (SPEC 8.2), except the image's last bytes.
* **retransmission timeout**: measured round trips (the ACK of a chunk sent once, Karn's
  rule) set it as TCP does (RFC 6298: smoothed RTT + 4 x variance), between
  `min_retransmit` and the `retransmit_after` the caller gives as the ceiling; a timeout
  doubles it until the next measurement. A lost last chunk, which has no successor to
  make the device NAK, then costs a few round trips instead of a fixed quarter second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Clean chunks (acknowledged without a loss) after which an adaptive sender doubles its chunk.
GROW_AFTER = 16


@dataclass
class TransferStats:
    bytes_sent: int = 0  # image bytes put in DATA frames, resends included
    frames_sent: int = 0
    resent_bytes: int = 0
    naks: int = 0
    timeouts: int = 0
    resent_frames: int = 0  # DATA frames that carried at least one byte sent before
    smallest_chunk: int = 0  # the smallest chunk the sender used (the device's when it never shrank)

    def add(self, other: TransferStats) -> None:
        for name in ("bytes_sent", "frames_sent", "resent_bytes", "naks", "timeouts", "resent_frames"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.smallest_chunk:
            self.smallest_chunk = min(self.smallest_chunk or other.smallest_chunk, other.smallest_chunk)


class Sender:
    def __init__(
        self,
        size: int,
        offset: int,
        chunk: int,
        window: int,
        retransmit_after: float,
        now: float,
        *,
        min_chunk: int | None = None,
        min_retransmit: float | None = None,
    ) -> None:
        if chunk <= 0 or window < chunk:
            raise ValueError("the device advertised a chunk or window the host cannot use")
        self.size = size
        self.max_chunk = chunk
        self.chunk = chunk
        self.window = window
        #: The current retransmission timeout; with min_retransmit, it adapts below this ceiling.
        self.retransmit_after = retransmit_after
        self._max_rto = retransmit_after
        self._min_rto = min_retransmit
        self._min_chunk = None if min_chunk is None else max(4, min(min_chunk, chunk))
        self.acked = offset
        self.next = offset
        self._high = offset  # highest offset ever sent, to count resent bytes
        self._last_progress = now
        self._recover = offset  # losses below this offset belong to a loss already reacted to
        self._clean = 0  # bytes acknowledged since the last loss or chunk change
        self._sent: deque[tuple[int, float, bool]] = deque()  # (end offset, when, first time) in flight
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.stats = TransferStats(smallest_chunk=chunk)

    @property
    def done(self) -> bool:
        return self.acked >= self.size

    # ------------------------------------------------------------ adaptation

    def _on_loss(self) -> None:
        self._clean = 0
        if self._min_chunk is None or self.acked < self._recover:
            return  # the same burst of noise: already reacted to
        self._recover = self._high
        smaller = max(self._min_chunk, (self.chunk // 2) // 4 * 4)
        if smaller < self.chunk:
            self.chunk = smaller
            self.stats.smallest_chunk = min(self.stats.smallest_chunk, smaller)

    def _on_progress(self, advanced: int, now: float) -> None:
        if self._min_rto is not None:
            sample = None
            while self._sent and self._sent[0][0] <= self.acked:
                end, when, first = self._sent.popleft()
                sample = (now - when) if first else None  # Karn: no sample from a resent chunk
            if sample is not None:
                self._measure(sample)
        if self._min_chunk is None:
            return
        self._clean += advanced
        if self._clean >= GROW_AFTER * self.chunk and self.chunk < self.max_chunk:
            self.chunk = min(self.max_chunk, self.chunk * 2)
            self._clean = 0

    def _measure(self, rtt: float) -> None:
        """RFC 6298, section 2."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        assert self._min_rto is not None
        self.retransmit_after = min(self._max_rto, max(self._min_rto, self._srtt + 4 * self._rttvar))

    def _rewind(self) -> None:
        self.next = self.acked
        self._sent.clear()

    # ------------------------------------------------------------ events

    def on_ack(self, offset: int, nak: bool, now: float) -> None:
        if offset > self.acked:
            advanced = min(offset, self.size) - self.acked
            self.acked = min(offset, self.size)
            self._last_progress = now
            self._on_progress(advanced, now)
        if self.next < self.acked:
            self.next = self.acked
        if nak:
            self.stats.naks += 1
            self._on_loss()
            self._rewind()

    def poll(self, now: float) -> list[tuple[int, int]]:
        """Chunks to send now, in order."""
        if self.next > self.acked and now - self._last_progress >= self.retransmit_after:
            self.stats.timeouts += 1
            self._on_loss()
            self._rewind()
            self._last_progress = now
            if self._min_rto is not None:
                self.retransmit_after = min(self._max_rto, 2 * self.retransmit_after)  # back off
        out = []
        while self.next < self.size:
            length = min(self.chunk, self.size - self.next)
            if self.next + length > self.acked + self.window:
                break  # only whole chunks: a short one would cost a header for little data
            out.append((self.next, length))
            first = self.next >= self._high
            if not first:
                self.stats.resent_bytes += min(length, self._high - self.next)
                self.stats.resent_frames += 1
            self.stats.bytes_sent += length
            self.stats.frames_sent += 1
            self.next += length
            self._high = max(self._high, self.next)
            if self._min_rto is not None:
                self._sent.append((self.next, now, first))
        return out

    def deadline(self) -> float:
        """When poll() would next act on its own (a retransmission timeout)."""
        return self._last_progress + self.retransmit_after
