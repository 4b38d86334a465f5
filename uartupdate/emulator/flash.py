"""A NOR flash as a board has it: erase by sector to 0xFF, program only erased, aligned units.

The whole flash is one raw file mapped into memory (or an anonymous map without a
file), so every program and erase reaches the file at once: a killed emulator keeps
exactly what its flash held, and `cmp`/`dd`/`xxd` read it as a board's dump.
"""

from __future__ import annotations

import mmap
import random
import os
from pathlib import Path


class FlashError(Exception):
    """An operation a real part would refuse (misaligned, out of range, not erased)."""


class PowerLoss(Exception):
    """Power was cut before or during a flash operation; the device must power up again."""


class PowerCut:
    """When and how the next power cut strikes: at operation `at` (1-based, counted by the flash).

    `torn`: the operation is cut halfway: an erase leaves each bit of the sector erased or
    not at random, a program leaves each bit it was to clear cleared or not at random,
    drawn from a generator seeded with `seed` so the failure replays exactly.
    Otherwise the power goes just before the operation and nothing changes.
    """

    def __init__(self, at: int, torn: bool = True, seed: int = 0) -> None:
        self.at = at
        self.torn = torn
        self.rng = random.Random(seed)


class NorFlash:
    def __init__(
        self,
        size: int,
        sector_size: int,
        write_align: int,
        path: str | os.PathLike[str] | None = None,
        erase_seconds_per_sector: float = 0.0,
        program_seconds_per_byte: float = 0.0,
    ) -> None:
        if size <= 0 or sector_size <= 0 or size % sector_size:
            raise ValueError("flash size must be a positive multiple of the sector size")
        if write_align <= 0 or sector_size % write_align:
            raise ValueError("the sector size must be a multiple of the write alignment")
        self.size = size
        self.sector_size = sector_size
        self.write_align = write_align
        self.path = Path(path) if path is not None else None
        self.erase_seconds_per_sector = erase_seconds_per_sector
        self.program_seconds_per_byte = program_seconds_per_byte
        #: Flash operations performed (erase of one sector or one program call).
        self.operations = 0
        #: Modelled time the part spent erasing and programming, for the link simulator.
        self.busy_seconds = 0.0
        #: A pending power cut, armed by the caller; it fires once.
        self.power_cut: PowerCut | None = None
        self._erased_unit = b"\xff" * sector_size
        self._file = None
        if self.path is None:
            self._mem = mmap.mmap(-1, size)
            self._mem.write(b"\xff" * size)
        else:
            self._file = self._open_file(self.path, size)
            self._mem = mmap.mmap(self._file.fileno(), size)

    @staticmethod
    def _open_file(path: Path, size: int):  # type: ignore[no-untyped-def]
        if path.exists():
            actual = path.stat().st_size
            if actual != size:
                raise FlashError(f"flash file {path} holds {actual} bytes, the profile says {size}")
            return open(path, "r+b")
        f = open(path, "w+b")
        block = b"\xff" * (1 << 20)
        for start in range(0, size, len(block)):
            f.write(block[: size - start])
        f.flush()
        return f

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        return self._mem[offset : offset + length]

    def erase(self, offset: int, length: int) -> None:
        """Erase whole sectors covering [offset, offset+length)."""
        if offset % self.sector_size or length % self.sector_size:
            raise FlashError(f"erase of 0x{offset:x}+0x{length:x} is not sector aligned ({self.sector_size})")
        self._check_range(offset, length)
        for start in range(offset, offset + length, self.sector_size):
            self._count_operation(start, self._erased_unit, erase=True)
            self.busy_seconds += self.erase_seconds_per_sector
            self._mem[start : start + self.sector_size] = self._erased_unit

    def program(self, offset: int, data: bytes) -> None:
        """Program erased, aligned units; programming a non-erased location is an error."""
        length = len(data)
        if offset % self.write_align or length % self.write_align:
            raise FlashError(f"program of 0x{offset:x}+0x{length:x} is not aligned to {self.write_align}")
        self._check_range(offset, length)
        current = self._mem[offset : offset + length]
        if current.count(0xFF) != length:
            raise FlashError(f"program at 0x{offset:x}: location is not erased")
        self._count_operation(offset, data, erase=False)
        self.busy_seconds += self.program_seconds_per_byte * length
        self._mem[offset : offset + length] = data

    def _count_operation(self, offset: int, target: bytes, erase: bool) -> None:
        """Count one operation; if the armed power cut is due, leave its torn result and raise."""
        self.operations += 1
        cut = self.power_cut
        if cut is None or self.operations != cut.at:
            return
        self.power_cut = None
        if cut.torn:
            n = len(target)
            old = int.from_bytes(self._mem[offset : offset + n], "little")
            noise = int.from_bytes(cut.rng.randbytes(n), "little")
            # erase: some bits reach 1; program: some of the bits to clear are cleared
            torn = old | noise if erase else old & (int.from_bytes(target, "little") | noise)
            self._mem[offset : offset + n] = torn.to_bytes(n, "little")
        what = "erase" if erase else "program"
        raise PowerLoss(f"power cut {'during' if cut.torn else 'before'} flash operation {self.operations} ({what} at 0x{offset:x})")

    def take_busy_seconds(self) -> float:
        busy, self.busy_seconds = self.busy_seconds, 0.0
        return busy

    def flush(self) -> None:
        if self._file is not None:
            self._mem.flush()

    def close(self) -> None:
        if self._mem.closed:
            return
        self.flush()
        self._mem.close()
        if self._file is not None:
            self._file.close()

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashError(f"0x{offset:x}+0x{length:x} is outside the {self.size}-byte flash")
