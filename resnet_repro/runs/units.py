"""Durations as people read them on a console: 42s, 5m, 1h05m (never a bare 0:05)."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`42s` under a minute, `5m` under an hour, `1h05m` above (rounded to the minute)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m = int(round(s / 60))
    return f"{m}m" if m < 60 else f"{m // 60}h{m % 60:02d}m"
