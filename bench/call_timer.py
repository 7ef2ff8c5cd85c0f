"""Where an edit's time goes: chosen functions are wrapped (in the benchmark's own process only) so
that every call is recorded with its start and end, and the memory pages it faulted in. Nothing is
changed but the bookkeeping."""

from __future__ import annotations

import functools
import statistics
import time

try:
    import resource
except ImportError:  # Windows: no page-fault counts
    resource = None


def minor_faults() -> int | None:
    """Fresh memory pages this process has faulted in so far (None where the OS does not say)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else None


class CallTimer:
    def __init__(self):
        self.calls: list[tuple[str, float, float]] = []  # (label, start, end), in the order calls end
        self.faulted: list[tuple[str, int]] = []  # (label, pages faulted in during the call), same order

    def wrap(self, owner, name: str, label: str) -> None:
        """Time every call of ``owner.name`` (a function on a class, or a method of one object)."""
        original = getattr(owner, name)
        calls, faulted = self.calls, self.faulted

        @functools.wraps(original)
        def timed(*args, **kwargs):
            faults, started = minor_faults(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append((label, started, time.perf_counter()))
                if faults is not None:
                    faulted.append((label, minor_faults() - faults))

        setattr(owner, name, timed)

    def clear(self) -> None:
        self.calls.clear()
        self.faulted.clear()

    def faults(self, label: str) -> list[int]:
        """Pages faulted in per call (a call inside another counts in both; empty where not counted)."""
        return [pages for name, pages in self.faulted if name == label]

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
