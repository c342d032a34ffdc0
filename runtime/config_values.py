"""Docker's string forms of sizes (go-units `RAMInBytes`/`FromHumanSize`) and signals
(pkg/signal `ParseSignal`).
"""

from __future__ import annotations

import re

from proto.docker.errors import InvalidParameter

DEFAULT_STOP_SIGNAL = 15

# pkg/signal SignalMap (linux), without the SIG prefix.
SIGNALS: dict[str, int] = {
    "ABRT": 6,
    "ALRM": 14,
    "BUS": 7,
    "CHLD": 17,
    "CLD": 17,
    "CONT": 18,
    "FPE": 8,
    "HUP": 1,
    "ILL": 4,
    "INT": 2,
    "IO": 29,
    "IOT": 6,
    "KILL": 9,
    "PIPE": 13,
    "POLL": 29,
    "PROF": 27,
    "PWR": 30,
    "QUIT": 3,
    "SEGV": 11,
    "STKFLT": 16,
    "STOP": 19,
    "SYS": 31,
    "TERM": 15,
    "TRAP": 5,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "USR1": 10,
    "USR2": 12,
    "VTALRM": 26,
    "WINCH": 28,
    "XCPU": 24,
    "XFSZ": 25,
    "RTMIN": 34,
    "RTMAX": 64,
    **{f"RTMIN+{i}": 34 + i for i in range(1, 16)},
    **{f"RTMAX-{i}": 64 - i for i in range(1, 15)},
}


_SIZE_RE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


_DECIMAL = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}


_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def _parse_units(s: str, units: dict[str, int]) -> int:
    m = _SIZE_RE.match(s)
    if not m:
        raise InvalidParameter(f"invalid size: '{s}'")
    number = m.group(1)
    if number.count(".") > 1:
        # go-units' regexp accepts "1.2.3" and strconv.ParseFloat then rejects it
        raise InvalidParameter(f'strconv.ParseFloat: parsing "{number}": invalid syntax')
    size = float(number)
    if m.group(3):
        size *= units[m.group(3).lower()]
    return int(size)


def parse_memory(s: str) -> int:
    """go-units RAMInBytes: binary multiples (`1g` = 1024**3), `1.5g`, `512k`, plain bytes."""
    return _parse_units(s, _BINARY)


def parse_size(s: str) -> int:
    """go-units FromHumanSize (decimal: `10m` = 10_000_000), what json-file uses for max-size."""
    return _parse_units(s, _DECIMAL)


def parse_signal(s: str) -> int:
    """pkg/signal ParseSignal: a non-zero number, or a name with or without SIG."""
    if re.fullmatch(r"[+-]?\d+", s):
        n = int(s)
        if n == 0 or abs(n) > 2**63:
            raise InvalidParameter(f"Invalid signal: {s}")
        return n
    name = s.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {s}")
    return SIGNALS[name]
