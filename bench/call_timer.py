"""Where an edit's time goes: chosen functions are wrapped (in the benchmark's own process only) so
that every call is recorded with its start and end. Nothing is changed but the bookkeeping."""

from __future__ import annotations

import functools
import statistics
import time


class CallTimer:
    def __init__(self):
        self.calls: list[tuple[str, float, float]] = []  # (label, start, end), in the order calls end

    def wrap(self, owner, name: str, label: str) -> None:
        """Time every call of ``owner.name`` (a function on a class, or a method of one object)."""
        original = getattr(owner, name)
        calls = self.calls

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append((label, started, time.perf_counter()))

        setattr(owner, name, timed)

    def clear(self) -> None:
        self.calls.clear()

    def seconds(self, label: str) -> list[float]:
        return [end - start for name, start, end in self.calls if name == label]

    def total(self, label: str) -> float:
        return sum(self.seconds(label))

    def span(self, label: str) -> float:
        """From the first call's start to the last call's end (0 without calls)."""
        spans = [(start, end) for name, start, end in self.calls if name == label]
        return max(end for _s, end in spans) - min(start for start, _e in spans) if spans else 0.0

    def intervals(self, label: str) -> list[float]:
        """Between consecutive calls' starts: one whole sampling step each, the UNet and all around it."""
        starts = sorted(start for name, start, _end in self.calls if name == label)
        return [later - earlier for earlier, later in zip(starts, starts[1:])]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
