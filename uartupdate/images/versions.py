"""Version order for anti-downgrade (protocol/SPEC.md, "Versions").

A version is `[v]N(.N)*[-PRE][+BUILD]`: dotted decimal numbers, compared numerically
with missing parts as 0 ("1.2" == "1.2.0"); a pre-release sorts before its release and
pre-releases compare by dot-separated identifiers as in Semantic Versioning 2.0.0
(numbers numerically and below words); build metadata is ignored. Any other string is
not a version: a section that refuses downgrades refuses it.
"""

from __future__ import annotations

import re
from functools import total_ordering

_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?")


@total_ordering
class Version:
    def __init__(self, core: tuple[int, ...], pre: tuple[str, ...]) -> None:
        while len(core) > 1 and core[-1] == 0:
            core = core[:-1]
        self.core = core
        self.pre = pre

    def _key(self) -> tuple[tuple[int, ...], int, tuple[tuple[int, int, str], ...]]:
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return self.core, 0 if self.pre else 1, pre

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        a, b = self._key(), other._key()
        if a[:2] != b[:2]:
            return a[:2] < b[:2]
        # Semantic Versioning: a shorter run of equal identifiers sorts first.
        return a[2] < b[2]

    def __hash__(self) -> int:
        return hash(self._key())


def parse_version(text: str) -> Version | None:
    m = _VERSION.fullmatch(text)
    if m is None:
        return None
    pre = tuple(m.group(2).split(".")) if m.group(2) else ()
    return Version(tuple(int(n) for n in m.group(1).split(".")), pre)
