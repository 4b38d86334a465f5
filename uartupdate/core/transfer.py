"""The host's side of a streamed transfer: which chunk to send next (Go-Back-N with NAK).

Sans-I/O: the caller passes the current time in and gets (offset, length) pairs
to read from the image and send as DATA frames. The device acknowledges the
offset below which it holds every byte; a NAK (one per gap) or a silent
retransmission timeout rewinds sending to the acknowledged offset.

On a noisy line the sender adapts, when asked to (`min_chunk`, `min_retransmit`):

* **chunk size and data in flight**: Go-Back-N keeps, of each burst, the clean frames
  before the first loss, and pays for the rest. The sender estimates the rate of loss per
  byte on the wire (each NAK or timeout is one loss; the count decays, so the estimate
  follows a line that gets better or worse) and picks the chunk from it: a frame of n
  bytes survives with s = (1 - p)^(n + overhead), a burst then delivers about
  n * s / (1 - s) bytes, and the sender takes the largest chunk (from the device's, halving
  down to `min_chunk`) that delivers at least FAIR of the best. At a bit-error rate of 1e-4
  a 2 KiB frame is almost always hit and 256 bytes is chosen; on a clean line, or one that
  loses whole frames whatever their size, the device's chunk stays. Once losses are
  expected within a window, the data in flight is cut to what the device must receive
  before it acknowledges, plus a chunk (SPEC 8.2), so a loss wastes less. Lengths stay
  multiples of 4 (SPEC 8.2), except the image's last bytes.
* **retransmission timeout**: measured round trips (the ACK of a chunk sent once, Karn's
  rule) set it as TCP does (RFC 6298: smoothed RTT + 4 x variance), between
  `min_retransmit` and the `retransmit_after` the caller gives as the ceiling; a timeout
  doubles it until the next measurement. A lost last chunk, which has no successor to
  make the device NAK, then costs a few round trips instead of a fixed quarter second.
  The caller may give a first measurement (`rtt`: its Update request and the READY).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: An adaptive sender takes the largest chunk that delivers at least this share of the best one.
FAIR = 0.8
#: Bytes a DATA frame costs besides its data: kind, xfer, offset, CRC, COBS, delimiter.
FRAME_OVERHEAD = 14
#: ... and one whose gap-filling pair of copies is lost less often than this (a timeout each).
SILENT_LOSS = 0.05
#: An empty DATA frame this far before the end of a burst asks the device where it stands.
PROBE_BACK = 4
#: The loss estimate starts as if this many bytes had gone through clean: one early loss is
#: not yet a noisy line.
PRIOR = 8192
#: The loss estimate forgets: its counts halve each time this many bytes have been sent.
MEMORY = 256 * 1024


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


@dataclass
class LineEstimate:
    """What a line has shown: losses per byte the device judged, round-trip time (decayed)."""

    losses: float = 0.0  # NAKs and timeouts
    exposure: float = float(PRIOR)  # bytes the device judged: taken, or lost in a frame
    srtt: float | None = None
    rttvar: float = 0.0


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
        rtt: float | None = None,
        ack_every: int | None = None,
        line: LineEstimate | None = None,
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
        #: Bytes the sender lets be in flight: the window, less on a noisy line (never below
        #: what the device needs to receive before it acknowledges, plus a chunk).
        self.limit = window
        self._ack_every = ack_every if ack_every is not None else max(chunk, window // 2)
        self.acked = offset
        self.next = offset
        self._high = offset  # highest offset ever sent, to count resent bytes
        self._last_progress = now
        self._repeat = False  # send the next chunk twice
        #: What this line has shown so far; pass the same LineEstimate to the next Sender on the
        #: line (a resumed or a later transfer) so that it starts from it.
        self.line = line if line is not None else LineEstimate()
        self._sent: deque[tuple[int, float, bool]] = deque()  # (end offset, when, first time) in flight
        self.stats = TransferStats(smallest_chunk=chunk)
        if rtt is not None and min_retransmit is not None:
            self._measure(rtt)  # a round trip measured by the caller (its request and the READY)
        if self._min_chunk is not None and self.line.losses:
            self._adapt()

    @property
    def done(self) -> bool:
        return self.acked >= self.size

    # ------------------------------------------------------------ adaptation

    def _on_loss(self) -> None:
        if self._min_chunk is None:
            return
        self.line.losses += 1
        self._exposed(self.chunk + FRAME_OVERHEAD)  # the frame that was lost

    def _exposed(self, nbytes: float) -> None:
        """Bytes the device has judged: clean ones it took, and lost frames."""
        self.line.exposure += nbytes
        if self.line.exposure > MEMORY:
            self.line.exposure /= 2
            self.line.losses /= 2
        self._adapt()

    def _adapt(self) -> None:
        """Chunk and data in flight for the loss rate seen so far."""
        assert self._min_chunk is not None
        p = self.line.losses / max(self.line.exposure, 1.0)
        if p <= 0:
            chunk = self.max_chunk
        else:
            sizes = []
            n = self.max_chunk
            while True:
                sizes.append(n)
                smaller = (n // 2) // 4 * 4
                if smaller < self._min_chunk or smaller == n:
                    break
                n = smaller
            delivered = {}
            for n in sizes:
                survive = (1 - p) ** (n + FRAME_OVERHEAD) if p < 1 else 0.0
                delivered[n] = n * survive / (1 - survive) if survive < 1 else float("inf")
            best = max(delivered.values())
            chunk = max(n for n in sizes if delivered[n] >= FAIR * best)
            # The chunk that fills a gap goes twice; if both copies are lost the device stays
            # silent (it NAKs a gap once) and only a timeout helps: keep that rare.
            while chunk > sizes[-1] and 1 - (1 - p) ** (chunk + FRAME_OVERHEAD) > SILENT_LOSS**0.5:
                chunk = sizes[sizes.index(chunk) + 1]
        self.chunk = chunk
        self.stats.smallest_chunk = min(self.stats.smallest_chunk, chunk)
        expected = p * (self.window + FRAME_OVERHEAD * self.window / chunk)  # losses per window
        self.limit = self.window if expected < 0.5 else min(self.window, self._ack_every + chunk)

    def _on_progress(self, advanced: int, now: float) -> None:
        if self._min_rto is not None:
            sample = None
            while self._sent and self._sent[0][0] <= self.acked:
                end, when, first = self._sent.popleft()
                sample = (now - when) if first else None  # Karn: no sample from a resent chunk
            if sample is not None:
                self._measure(sample)
            elif self.line.srtt is not None:  # the line works again: no more back-off
                self.retransmit_after = self._rto()
        if self._min_chunk is not None:
            self._exposed(advanced * (1 + FRAME_OVERHEAD / self.chunk))

    def _measure(self, rtt: float) -> None:
        """RFC 6298, section 2."""
        if self.line.srtt is None:
            self.line.srtt, self.line.rttvar = rtt, rtt / 2
        else:
            self.line.rttvar = 0.75 * self.line.rttvar + 0.25 * abs(self.line.srtt - rtt)
            self.line.srtt = 0.875 * self.line.srtt + 0.125 * rtt
        self.retransmit_after = self._rto()

    def _rto(self) -> float:
        assert self._min_rto is not None and self.line.srtt is not None
        return min(self._max_rto, max(self._min_rto, self.line.srtt + 4 * self.line.rttvar))

    def _rewind(self) -> None:
        self.next = self.acked
        self._sent.clear()
        self._repeat = self._min_chunk is not None

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
            if self.next + length > self.acked + self.limit:
                break  # only whole chunks: a short one would cost a header for little data
            out.append((self.next, length))
            if self._repeat:  # the chunk that fills the gap goes twice (see the module's doc)
                self._repeat = False
                out.append((self.next, length))
                self.stats.bytes_sent += length
                self.stats.frames_sent += 1
                self.stats.resent_frames += 1
                self.stats.resent_bytes += length
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
        if out and self.line.losses and self.next - PROBE_BACK > self.acked:
            # An empty chunk just before the end of the burst: a device that holds the whole
            # burst takes it for a duplicate and acknowledges (even if an ACK of it was lost);
            # one that lost the end sees a gap and NAKs. Either way the sender hears now,
            # instead of timing out.
            out.append((self.next - PROBE_BACK, 0))
            self.stats.frames_sent += 1
        return out

    def deadline(self) -> float:
        """When poll() would next act on its own (a retransmission timeout)."""
        return self._last_progress + self.retransmit_after
