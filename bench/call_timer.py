"""Where an edit's time and memory go: chosen functions are wrapped (in the benchmark's own process
only) so that every call is recorded with its start and end and the memory pages it faulted in,
and, on Linux, which call was running when the process's resident memory reached its peak.
Nothing is changed but the bookkeeping."""

from __future__ import annotations

import functools
import re
import statistics
import time
from pathlib import Path

try:
    import resource
except ImportError:  # Windows: no page-fault counts
    resource = None


def minor_faults() -> int | None:
    """Fresh memory pages this process has faulted in so far (None where the OS does not say)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else None


_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def status_mib(*fields: str) -> float | tuple[float, ...]:
    """Memory figures of this process from /proc/self/status (Linux), in MiB, read at one moment:
    VmRSS, VmHWM (peak), RssFile (memory-mapped files' pages)..."""
    text = _STATUS.read_text()
    values = tuple(int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024 for field in fields)
    return values[0] if len(values) == 1 else values


def reset_peak() -> None:
    """Linux: the peak resident set size (VmHWM) starts again from the current size."""
    _CLEAR_REFS.write_text("5")


def peak_readable() -> bool:
    return _STATUS.exists() and _CLEAR_REFS.exists()


class CallTimer:
    """``memory=True`` (Linux) also charges the process's peak resident memory to the wrapped call
    that was running innermost when it was reached ("other" between calls), with how far it rose
    above the resident memory as that call started, not counting pages of memory-mapped files
    read meanwhile (a model's weights, read on first use): what the call needed for itself and the
    calls inside it. The kernel's peak (VmHWM) is read and reset as each wrapped call starts and
    ends, which costs microseconds. The rise is a lower bound where file pages were dropped."""

    def __init__(self, memory: bool = False):
        self.calls: list[tuple[str, float, float]] = []  # (label, start, end), in the order calls end
        self.faulted: list[tuple[str, int]] = []  # (label, pages faulted in during the call), same order
        self.memory = memory and peak_readable()
        self.peaks: dict[str, float] = {}  # label -> the highest resident MiB reached while it ran innermost
        self.rises: dict[str, float] = {}  # label -> the most that peak rose above the resident MiB at its start
        # (label, (resident, file-backed) MiB as it started), innermost last
        self._running: list[tuple[str, tuple[float, float]]] = []
        self._between = (0.0, 0.0)  # the same as the last stretch between calls started

    def wrap(self, owner, name: str, label: str) -> None:
        """Time every call of ``owner.name`` (a function on a class, or a method of one object)."""
        original = getattr(owner, name)
        calls, faulted, running = self.calls, self.faulted, self._running

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self.charge_peak()
            running.append((label, status_mib("VmRSS", "RssFile") if self.memory else (0.0, 0.0)))
            faults, started = minor_faults(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append((label, started, time.perf_counter()))
                if faults is not None:
                    faulted.append((label, minor_faults() - faults))
                self.charge_peak()
                running.pop()
                if not running and self.memory:
                    self._between = status_mib("VmRSS", "RssFile")

        setattr(owner, name, timed)

    def charge_peak(self) -> None:
        """The peak since the last charge goes to the call running innermost now; the kernel's
        counter starts again. Call it once more at the end of what is measured."""
        if not self.memory:
            return
        label, (resident, files) = self._running[-1] if self._running else ("other", self._between)
        peak, files_now = status_mib("VmHWM", "RssFile")
        self.peaks[label] = max(self.peaks.get(label, 0.0), peak)
        self.rises[label] = max(self.rises.get(label, 0.0), peak - resident - max(0.0, files_now - files))
        reset_peak()

    def peak(self) -> float | None:
        """The highest resident MiB since clear() (None without memory=True)."""
        self.charge_peak()
        return max(self.peaks.values()) if self.peaks else None

    def clear(self) -> None:
        self.calls.clear()
        self.faulted.clear()
        self.peaks.clear()
        self.rises.clear()
        if self.memory:
            reset_peak()
            self._between = status_mib("VmRSS", "RssFile")

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
