"""The operator's text form of a compartment mapping: `N:SLAVE:ADDR,...`.

Used by `bank create --mapping` and `bank update --mapping/--mapping-file` (a file holds
the same entries, separated by commas or newlines; `#` starts a comment). Pure.
"""

from __future__ import annotations

from backend.domain.errors import InvalidInput
from backend.domain.events import CompartmentSpec


def parse_mapping(text: str) -> list[CompartmentSpec]:
    """`1:1:0,2:1:1` -> compartments 1 and 2 on slave 1, addresses 0 and 1."""
    specs: list[CompartmentSpec] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in line.split(","):
            entry = entry.strip()
            if not entry:
                continue
            parts = entry.split(":")
            if len(parts) != 3:
                raise InvalidInput(f"mapping entry {entry[:40]!r} is not N:SLAVE:ADDR")
            try:
                number, slave, address = (int(p.strip()) for p in parts)
            except ValueError:
                raise InvalidInput(f"mapping entry {entry[:40]!r} is not three integers") from None
            specs.append(CompartmentSpec(number=number, slave_id=slave, address=address))
    if not specs:
        raise InvalidInput("the mapping names no compartment")
    return sorted(specs, key=lambda s: s.number)


def format_mapping(specs: list[CompartmentSpec]) -> str:
    return ",".join(f"{s.number}:{s.slave_id}:{s.address}" for s in specs)
