"""A bad serial line, on purpose: bit errors, lost bytes, noise bursts, stalls and unplugs.

Sans-I/O like the core: the caller passes the bytes that go onto the line and the
current time, and gets back what arrives at the far end and not before when. Every
random choice comes from one seeded `random.Random`, so a failure seen with a seed
is replayed by the same seed: the same byte positions of the stream are hit. (What
the host sends depends on timing too, retransmission timers above all, so a replay is
exact as far as the host's timing repeats.)

The model, per direction (host -> device and device -> host, each its own stream of
random numbers):

* ``ber``: each bit is inverted with this probability (independently);
* ``drop_rate``: each byte is lost with this probability (a receive FIFO overflowing);
* ``garbage_rate``: after each byte, with this probability, a burst of 1..``garbage_len``
  random bytes (any value, 00 included) is inserted (a glitch, a ground loop, a motor).

And for the line as a whole, counted in bytes written by the host (the direction that
always carries traffic during an update), so that they hit the same place on every run:

* ``stall_every`` / ``stall_for``: after every ``stall_every`` bytes the line carries
  nothing, either way, for ``stall_for`` seconds; what is sent meanwhile arrives after it
  (a USB adapter or a hub that hangs for a moment);
* ``unplug_every`` / ``unplug_for``: after every ``unplug_every`` bytes the cable is
  pulled for ``unplug_for`` seconds: what follows is lost both ways, and the endpoint
  makes the host's port vanish (see PtyEndpoint and emu://).

The noise is applied with geometric gaps between events, so its cost is per event,
not per bit: a clean megabyte costs one slice copy.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Mapping

INF = math.inf


@dataclass(frozen=True)
class FaultConfig:
    ber: float = 0.0
    drop_rate: float = 0.0
    garbage_rate: float = 0.0
    garbage_len: int = 32
    stall_every: int = 0
    stall_for: float = 0.0
    unplug_every: int = 0
    unplug_for: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ber", "drop_rate", "garbage_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be at least 0 and below 1, not {value:g}")
        if self.garbage_len < 1:
            raise ValueError(f"garbage_len must be at least 1, not {self.garbage_len}")
        for name in ("stall_every", "unplug_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("stall_for", "unplug_for"):
            if not 0.0 <= getattr(self, name) < INF:
                raise ValueError(f"{name} must be a non-negative number of seconds")

    @property
    def active(self) -> bool:
        return bool(self.ber or self.drop_rate or self.garbage_rate or self.stall_every or self.unplug_every)

    #: URL query / option names (either spelling) -> field, and how to read the text.
    _NAMES = {
        "ber": ("ber", float),
        "drop": ("drop_rate", float),
        "drop_rate": ("drop_rate", float),
        "garbage": ("garbage_rate", float),
        "garbage_rate": ("garbage_rate", float),
        "garbage_len": ("garbage_len", int),
        "stall_every": ("stall_every", int),
        "stall_ms": ("stall_for", lambda t: float(t) / 1000),
        "unplug_every": ("unplug_every", int),
        "unplug_ms": ("unplug_for", lambda t: float(t) / 1000),
        "seed": ("seed", int),
    }

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> FaultConfig:
        """From URL query parameters (`ber=1e-5&drop-rate=1e-4&seed=7`); other names are ignored.

        Values may be strings or lists of strings (as urllib.parse.parse_qs gives them).
        """
        values: dict[str, Any] = {}
        for raw_name, raw in query.items():
            name = raw_name.replace("-", "_")
            if name not in cls._NAMES:
                continue
            text = raw[-1] if isinstance(raw, (list, tuple)) else raw
            field_name, parse = cls._NAMES[name]
            try:
                values[field_name] = parse(text)
            except (TypeError, ValueError):
                raise ValueError(f"{raw_name}={text!r} is not a number") from None
        return cls(**values)

    def describe(self) -> str:
        """One line for a person: only what is switched on."""
        parts = []
        if self.ber:
            parts.append(f"BER {self.ber:g}")
        if self.drop_rate:
            parts.append(f"drop rate {self.drop_rate:g}")
        if self.garbage_rate:
            parts.append(f"garbage rate {self.garbage_rate:g} (bursts up to {self.garbage_len} B)")
        if self.stall_every:
            parts.append(f"{self.stall_for * 1000:g} ms stall every {self.stall_every} B")
        if self.unplug_every:
            parts.append(f"{self.unplug_for * 1000:g} ms unplug every {self.unplug_every} B")
        return (", ".join(parts) or "no faults") + f", seed {self.seed}"


class _Gaps:
    """How many clean trials come before the next event of probability p (geometric)."""

    def __init__(self, p: float, rng: random.Random) -> None:
        self._rng = rng
        self._log = math.log1p(-p) if p > 0 else 0.0

    def next(self) -> float:
        if not self._log:
            return INF
        return math.floor(math.log1p(-self._rng.random()) / self._log)


@dataclass
class NoiseStats:
    bytes: int = 0  # bytes put on the line
    flipped_bits: int = 0
    dropped_bytes: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0
    unplugged_bytes: int = 0  # lost because the cable was out

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Noise:
    """Bit errors, lost bytes and inserted bursts on one direction of the line."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self.config = config
        # One stream of random numbers per kind of event: where events fall does not depend
        # on how the bytes were cut into chunks.
        self._flip = _Gaps(config.ber, random.Random(rng.getrandbits(64)))
        self._drop = _Gaps(config.drop_rate, random.Random(rng.getrandbits(64)))
        self._garbage_rng = random.Random(rng.getrandbits(64))
        self._garbage = _Gaps(config.garbage_rate, self._garbage_rng)
        # Distance from the start of the next chunk to the next event of each kind.
        self._to_flip = self._flip.next()  # in bits
        self._to_drop = self._drop.next()  # in bytes
        self._to_garbage = self._garbage.next()  # in bytes: a burst goes after that byte
        self.stats = NoiseStats()

    def _burst(self) -> bytes:
        return self._garbage_rng.randbytes(self._garbage_rng.randint(1, self.config.garbage_len))

    def apply(self, data: bytes) -> bytes:
        n = len(data)
        self.stats.bytes += n
        if not n:
            return b""
        out = bytearray(data)
        bits = 8 * n
        pos = self._to_flip
        while pos < bits:
            p = int(pos)
            out[p >> 3] ^= 1 << (p & 7)
            self.stats.flipped_bits += 1
            pos += 1 + self._flip.next()
        self._to_flip = pos - bits
        drops: list[int] = []
        pos = self._to_drop
        while pos < n:
            drops.append(int(pos))
            pos += 1 + self._drop.next()
        self._to_drop = pos - n
        bursts: list[tuple[int, bytes]] = []
        pos = self._to_garbage
        while pos < n:
            bursts.append((int(pos), self._burst()))
            pos += 1 + self._garbage.next()
        self._to_garbage = pos - n
        if not drops and not bursts:
            return bytes(out)
        self.stats.dropped_bytes += len(drops)
        events = sorted([(p, 0, b"") for p in drops] + [(p, 1, burst) for p, burst in bursts])
        result = bytearray()
        start = 0
        for p, kind, burst in events:
            if kind == 0:  # byte p is lost
                result += out[start:p]
                start = p + 1
            else:  # a burst after byte p (after its place, if p was lost)
                if start <= p:
                    result += out[start : p + 1]
                start = max(start, p + 1)
                result += burst
                self.stats.garbage_bursts += 1
                self.stats.garbage_bytes += len(burst)
        result += out[start:]
        return bytes(result)


class LinkFaults:
    """Both directions of one line, with the stalls and unplugs they share."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        root = random.Random(config.seed)
        self.to_device = Noise(config, random.Random(root.getrandbits(64)))
        self.to_host = Noise(config, random.Random(root.getrandbits(64)))
        self.stalled_until = -INF
        self.unplugged_until = -INF
        self.stalls = 0
        self.unplugs = 0
        self._written = 0  # bytes the host has put on the line
        self._next_stall = config.stall_every or INF
        self._next_unplug = config.unplug_every or INF

    def unplugged(self, now: float) -> bool:
        return now < self.unplugged_until

    def _not_before(self, now: float) -> float:
        return max(now, self.stalled_until)

    def host_to_device(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """What of `data`, written by the host at `now`, reaches the device: (not before, bytes) pieces."""
        out: list[tuple[float, bytes]] = []
        pos = 0
        while pos < len(data):
            if self.unplugged(now):
                self.to_device.stats.unplugged_bytes += len(data) - pos
                break
            until_event = min(self._next_stall, self._next_unplug) - self._written
            take = int(min(len(data) - pos, until_event))
            if take > 0:
                piece = self.to_device.apply(data[pos : pos + take])
                if piece:
                    out.append((self._not_before(now), piece))
                pos += take
                self._written += take
            if self._written >= self._next_unplug:
                self._next_unplug += self.config.unplug_every
                self.unplugs += 1
                self.unplugged_until = now + self.config.unplug_for
                if not self.config.unplug_for:
                    self.unplugged_until = math.nextafter(now, INF)  # still an unplug: the port vanishes
            if self._written >= self._next_stall:
                self._next_stall += self.config.stall_every
                self.stalls += 1
                self.stalled_until = max(self.stalled_until, now + self.config.stall_for)
        return out

    def device_to_host(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """What of `data`, sent by the device at `now`, reaches the host."""
        if self.unplugged(now):
            self.to_host.stats.unplugged_bytes += len(data)
            return []
        piece = self.to_host.apply(data)
        return [(self._not_before(now), piece)] if piece else []

    def stats(self) -> dict[str, Any]:
        return {
            "to_device": self.to_device.stats.as_dict(),
            "to_host": self.to_host.stats.as_dict(),
            "stalls": self.stalls,
            "unplugs": self.unplugs,
        }

    def summary(self) -> str:
        """One line: what the faults did so far."""
        d, h = self.to_device.stats, self.to_host.stats
        return (
            f"host->device {d.bytes} B: {d.flipped_bits} bits flipped, {d.dropped_bytes} B dropped, "
            f"{d.garbage_bursts} garbage bursts ({d.garbage_bytes} B); "
            f"device->host {h.bytes} B: {h.flipped_bits} bits flipped, {h.dropped_bytes} B dropped, "
            f"{h.garbage_bursts} garbage bursts ({h.garbage_bytes} B); "
            f"{self.stalls} stalls, {self.unplugs} unplugs"
        )
