"""Occluder scale lists: ``start:step:stop`` (inclusive) or a comma list.

>>> parse_scales("1.0:0.5:5")
(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
>>> parse_scales("1,1.5,2")
(1.0, 1.5, 2.0)
"""
from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from ..errors import ConfigError

MAX_SCALES = 10_000


def _number(text: str, what: str) -> Decimal:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"{what} {text.strip()!r} is not a number") from None
    if not d.is_finite():
        raise ConfigError(f"{what} must be finite, got {text.strip()!r}")
    return d


def _positive(values: tuple[float, ...], spec: str) -> tuple[float, ...]:
    bad = [v for v in values if not v > 0]
    if bad:
        raise ConfigError(f"scales must be > 0, got {bad[0]:g} in {spec!r}")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ConfigError(f"scale {dup[0]:g} is listed twice in {spec!r}")
    return values


def parse_scales(spec: str | float | int | tuple | list) -> tuple[float, ...]:
    """Parse a scale spec into a tuple of floats.

    ``start:step:stop`` is inclusive of ``stop`` when it lies on the grid; values are computed in
    decimal arithmetic, so ``0.1:0.1:0.3`` gives exactly (0.1, 0.2, 0.3). Numbers, and lists/tuples of
    numbers, pass through validated. Raises ConfigError (the CLI shows it as a bad --scales value).
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _positive((float(spec),), str(spec))
    if isinstance(spec, (tuple, list)):
        vals = tuple(float(v) for v in spec)
        if not vals or any(not math.isfinite(v) for v in vals):
            raise ConfigError(f"scales must be a non-empty list of finite numbers, got {list(spec)!r}")
        return _positive(vals, ",".join(f"{v:g}" for v in vals))
    text = str(spec).strip()
    if not text:
        raise ConfigError("empty scale spec: give start:step:stop (e.g. 1.0:0.5:5) or a list (e.g. 1,1.5,2)")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"scale range {text!r} must be start:step:stop, e.g. 1.0:0.5:5")
        start, step, stop = (_number(p, n) for p, n in zip(parts, ("start", "step", "stop")))
        if step <= 0:
            raise ConfigError(f"scale step must be > 0, got {parts[1].strip()!r} in {text!r}")
        if start > stop:
            raise ConfigError(f"scale start {parts[0].strip()} is greater than stop {parts[2].strip()} in {text!r}")
        n = int((stop - start) // step) + 1
        if n > MAX_SCALES:
            raise ConfigError(f"scale range {text!r} gives {n} values (at most {MAX_SCALES})")
        return _positive(tuple(float(start + i * step) for i in range(n)), text)
    vals = tuple(float(_number(p, "scale")) for p in text.split(",") if p.strip())
    if not vals:
        raise ConfigError(f"no scales in {text!r}")
    return _positive(vals, text)


def format_scale(s: float) -> str:
    """Short exact text for a scale in variant names: 1.0 -> '1', 1.5 -> '1.5' (round-trips)."""
    short = f"{s:g}"
    return short if float(short) == s else repr(float(s))
