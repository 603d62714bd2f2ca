"""Opt-in memory log of the test run: which tests make the suite's resident memory peak (Linux only).

Enabled by ``YOLOSTITCH_TEST_RSS=<file>`` (see ``conftest.py``). A thread samples, every ``INTERVAL`` seconds,
the resident set of the pytest process plus that of all its descendants (DataLoader workers, DDP ranks, CLI
subprocesses), summed. Summed RSS counts pages shared between a parent and its forked children once per
process, so it is an upper bound of what the tree holds, which is what a machine running the suite must have.
After each test one tab-separated line is appended: the test, the tree's peak during the test, the pytest
process's own RSS now and its high-water mark so far, and the largest waited-for child's peak (ru_maxrss,
which catches subprocesses shorter than the interval), all in MiB. At the end the heaviest tests are printed.
"""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import pytest

INTERVAL = 0.2  # seconds between samples of the process tree
SHOWN = 15  # heaviest tests printed at the end


def _status_kib(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass  # the process ended meanwhile
    return 0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += children
            todo += children
    return found


def tree_rss_kib(pid: int) -> int:
    """Summed VmRSS of ``pid`` and all its descendants."""
    return sum(_status_kib(p, "VmRSS") for p in [pid, *_descendants(pid)])


class RssMonitor:
    """The pytest plugin: samples in a daemon thread, writes a line per test, summarises at the end."""

    def __init__(self, log: Path):
        import os

        self.pid, self.log = os.getpid(), log
        self.peak_kib, self.rows = 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        log.write_text("test\ttree_peak_mib\tself_rss_mib\tself_hwm_mib\tlargest_child_mib\n")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(INTERVAL):
            rss = tree_rss_kib(self.pid)
            with self._lock:
                self.peak_kib = max(self.peak_kib, rss)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        with self._lock:
            self.peak_kib = tree_rss_kib(self.pid)
        yield
        with self._lock:
            peak = max(self.peak_kib, tree_rss_kib(self.pid))
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        row = (item.nodeid, peak / 1024, _status_kib(self.pid, "VmRSS") / 1024,
               _status_kib(self.pid, "VmHWM") / 1024, child / 1024)
        self.rows.append(row)
        with self.log.open("a") as f:
            f.write("\t".join([row[0], *(f"{v:.0f}" for v in row[1:])]) + "\n")

    def pytest_terminal_summary(self, terminalreporter):
        self._stop.set()
        if not self.rows:
            return
        write = terminalreporter.write_line
        write(f"resident memory (MiB), log in {self.log}: peak of the process tree "
              f"{max(r[1] for r in self.rows):.0f}, pytest's own high-water mark {max(r[3] for r in self.rows):.0f}, "
              f"largest child {max(r[4] for r in self.rows):.0f}; heaviest tests by tree peak:")
        for row in sorted(self.rows, key=lambda r: -r[1])[:SHOWN]:
            write(f"  {row[1]:8.0f}  {row[0]}")
