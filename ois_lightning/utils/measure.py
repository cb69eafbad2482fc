"""The measuring tools of ``ois bench`` (``ois_lightning/tools/bench.py``): median wall time after warm-up runs with
the device synchronised around each call, the peak memory of a section, and what the numbers were measured on."""
from __future__ import annotations

import ctypes
import os
import platform
import statistics
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_free_heap() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``; nothing elsewhere): an allocation that
    reuses freed pages still resident would not raise the RSS, and the section's peak would read as 0."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a code section in MB: CUDA allocator peak, or on CPU the peak RSS above the start
    (sampled every 2 ms by a thread, since torch's CPU allocations are invisible to tracemalloc; the C heap's free
    pages are released first, so reused memory counts)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.mb = (peak - self._start) / 2**20


def timed(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device
          ) -> dict[str, dict[str, float]]:
    """Median seconds (and peak MB) of each callable; the callables are run in turn within each repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, float] = {name: 0.0 for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            with PeakMemory(device) as mem:
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], mem.mb)
    return {name: {"s": statistics.median(ts), "min_s": min(ts), "peak_mb": peaks[name]}
            for name, ts in times.items()}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` (unchanged when None) inside the block."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
