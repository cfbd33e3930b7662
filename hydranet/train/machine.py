"""How busy the machine is, so a long command can say why it runs slower than promised.

A demo that promises "<= 10 minutes on an idle 2-core machine" and silently takes 27 on a busy one
breaks trust. ``Machine`` reads what Linux reports (``/proc/cpuinfo``'s model name, the CPUs this process
may use, ``os.getloadavg``, CPU steal from ``/proc/stat``: time a hypervisor gave our virtual CPUs to
someone else) and ``busy_reason`` turns a measured rate against an expected one into one plain sentence.
Elsewhere than Linux the fields it cannot read are ``None`` and nothing is claimed about them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A rate below this share of the expected one is "slower than promised", worth a line of explanation.
SLOW_SHARE = 0.67


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(total, steal) jiffies of all CPUs from ``/proc/stat``, or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    return sum(values[:8]), values[7] if len(values) > 7 else 0


@dataclass
class Machine:
    """A snapshot-taking view of this machine: CPU model, usable CPUs, and since ``mark()`` the CPU steal."""

    cpus: int
    model: str

    @classmethod
    def here(cls) -> Machine:
        """This machine (and the steal counter started now)."""
        m = cls(_usable_cpus(), cpu_model())
        m.mark()
        return m

    def mark(self) -> None:
        """Start counting CPU steal from now."""
        self._times = _cpu_times()

    def load(self) -> float | None:
        """The 1-minute load average (runnable processes, ours included), or None."""
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return None

    def steal(self) -> float | None:
        """Share of CPU time stolen by the hypervisor since ``mark()`` (0..1), or None."""
        now = _cpu_times()
        if now is None or self._times is None or now[0] <= self._times[0]:
            return None
        return (now[1] - self._times[1]) / (now[0] - self._times[0])

    def describe(self) -> dict[str, Any]:
        """JSON-ready: CPU model, usable CPUs, load average now, steal since ``mark()``."""
        return {"cpu": self.model, "cpus": self.cpus, "load_avg_1min": self.load(), "steal": self.steal()}

    def busy_reason(self, own_threads: int) -> str | None:
        """Why this machine is busy, or None: other work's share of the CPUs (load average less our
        ``own_threads`` busy threads, at least half a CPU more than the machine has free) or CPU steal (> 5 %)."""
        parts = []
        load = self.load()
        if load is not None and load - own_threads >= max(0.5, self.cpus - own_threads + 0.5):
            ours = f" while this uses {own_threads}" if own_threads else ""
            parts.append(f"load average {load:.1f} on {self.cpus} CPUs{ours}")
        steal = self.steal()
        if steal is not None and steal > 0.05:
            parts.append(f"{100 * steal:.0f} % of CPU time stolen by the hypervisor")
        return "; ".join(parts) or None


def slower_than_expected(rate: float, expected: float | None) -> bool:
    """Whether ``rate`` (work per second) is below ``SLOW_SHARE`` of ``expected`` (None: cannot tell)."""
    return expected is not None and expected > 0 and rate < SLOW_SHARE * expected
