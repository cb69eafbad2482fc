"""Work split over processes and threads, without Lightning (``ois eval`` needs none; docs/evaluation.md).

Sharded evaluation: under a process group (Lightning's after ``trainer.fit``, or :func:`process_group_from_env`
for ``ois eval`` under torchrun) the images of a test set a one-process evaluation visits are dealt out round
robin, image i to rank i % world_size (:func:`local_samples`); :func:`gather_records` hands every rank all the
per-image records in dataset order, so the metrics equal a one-process evaluation's. Threads: :func:`set_threads`
gives torch's intra-op pool this process's share of the cores.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist

from ..data import Sample


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def uses_gpu(accelerator: str) -> bool:
    """Whether ``train.accelerator`` runs on CUDA here (auto: when a GPU is visible)."""
    return torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda")


@contextlib.contextmanager
def process_group_from_env(accelerator: str = "auto") -> Iterator[torch.device]:
    """This process's device for ``ois eval``. Under torchrun (``WORLD_SIZE`` > 1) the default process group is
    initialised from the env (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; nccl on CUDA, gloo on
    CPU) and destroyed on exit; the device is ``cuda:LOCAL_RANK`` on CUDA."""
    gpu = uses_gpu(accelerator)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)  # nccl collectives (all_gather_object) run on the current device
    owned = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if gpu else "gloo", init_method="env://")
    try:
        yield device
    finally:
        if owned:
            dist.destroy_process_group()


def _prefix(dataset: Sequence[Sample], max_objects: int) -> tuple[int, dict[int, int]]:
    """What a one-process evaluation with ``max_objects`` visits: the number of leading images, and the object
    cap of the image it cuts short ({index: cap}, empty when none is)."""
    taken = 0
    for i in range(len(dataset)):
        if taken >= max_objects:
            return i, {}
        count = len(dataset[i].masks)
        if taken + count > max_objects:
            return i + 1, {i: max_objects - taken}
        taken += count
    return len(dataset), {}


def local_samples(dataset: Sequence[Sample], max_objects: int | None) -> tuple[Iterable[Sample], int | None]:
    """This rank's samples (lazily, in order) and the ``max_objects`` it still applies itself. One process: the
    whole dataset and ``max_objects``. Sharded: image i goes to rank i % world_size; with ``max_objects`` every
    rank first reads the masks of the images a one process would visit (:func:`_prefix`), so the objects are
    the same, and the cut-short image keeps its first objects only."""
    rank, size = world()
    if size == 1:
        return (dataset[i] for i in range(len(dataset))), max_objects
    count, caps = (len(dataset), {}) if max_objects is None else _prefix(dataset, max_objects)

    def sample(i: int) -> Sample:
        s = dataset[i]
        return dataclasses.replace(s, masks=s.masks[:caps[i]]) if i in caps else s

    return (sample(i) for i in range(rank, count, size)), None


def interleave(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Undo the round-robin deal: item k of shard r was item r + k * len(shards)."""
    total = sum(map(len, shards))
    return [shards[i % len(shards)][i // len(shards)] for i in range(total)]


def gather_records(records: list[dict]) -> list[dict]:
    """Every rank's per-image records (one per sample, skipped ones included) on every rank, in dataset order."""
    _, size = world()
    if size == 1:
        return records
    shards: list[Any] = [None] * size
    dist.all_gather_object(shards, records)
    return interleave(shards)


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if world()[1] > 1:
        dist.barrier()


def rank_path(path: str | Path) -> Path:
    """This rank's file beside ``path``: ``path`` itself in one process, else ``<stem>.rank<r>-of-<n><suffix>``
    (a rerun with the same world size finds its ranks' files again)."""
    path = Path(path)
    rank, size = world()
    return path if size == 1 else path.with_name(f"{path.stem}.rank{rank}-of-{size}{path.suffix}")


def local_processes(devices: Any = 1, accelerator: str = "auto") -> int:
    """Processes sharing this machine's cores: ``LOCAL_WORLD_SIZE`` (torchrun) or, for ``ois train`` before
    Lightning starts them, ``train.devices`` (a count, a list of ids, or auto/-1: every visible GPU, else 1)."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return max(1, int(os.environ["LOCAL_WORLD_SIZE"]))
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return max(1, len(devices))
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    return max(1, torch.cuda.device_count()) if uses_gpu(accelerator) else 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None, processes: int = 1) -> int:
    """Set torch's intra-op threads to ``threads`` (``train.threads`` / ``eval.threads``); by default a positive
    ``OMP_NUM_THREADS`` (the share ``ois sweep --parallel N`` or a scheduler gives each process), else this
    process's share of the cores (cores // ``processes``, at least 1); returns the number set."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if threads is not None:
        n = int(threads)
    elif omp.isdigit() and int(omp) > 0:
        n = int(omp)
    else:
        n = max(1, available_cores() // max(1, processes))
    torch.set_num_threads(n)
    return n
