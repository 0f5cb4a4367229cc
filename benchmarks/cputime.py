"""Wall and CPU seconds of a block, for the benchmarks: CPU time moves much less than wall time with what the other
users of a shared machine are doing, so every benchmark prints both (and the load average)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its whole process tree: every live descendant (e.g. a
    forkserver and its worker pool) with the children each has waited for (cmdstan runs, backfill shards, the dbt
    process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):  # exited meanwhile: its parent's cutime/cstime holds it
            continue
    return total / tick


class Timer:
    """Wall and CPU seconds (process tree) of a `with` block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu

    def __str__(self):
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} CPU-s"


def load_average(sep: str = " ") -> str:
    """The 1, 5 and 15 minute load averages."""
    return sep.join(f"{x:.1f}" for x in os.getloadavg())
