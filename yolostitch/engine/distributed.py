"""Multi-process training with torch.distributed, as launched by ``torchrun --nproc_per_node N train.py ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address) for each process. With
``WORLD_SIZE > 1`` :func:`process_group` joins the group (NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU);
otherwise everything here is a no-op and training runs as a plain single process. Rank 0 is the main process:
it alone logs, validates and writes files; the helpers below let the others wait for it and share its
decisions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from datetime import timedelta
from typing import Any, Iterable, Iterator, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..errors import FlagError
from .runs import select_device

# rank 0 validates and writes checkpoints while the others wait in a collective: allow it plenty of time
# (a process that fails does not make the others wait this long: see process_group)
TIMEOUT = timedelta(hours=3)
LOGGER = logging.getLogger(__name__)
_abandoned = False  # this process failed and left its process group without waiting for the others


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def world_size() -> int:
    """Processes in the job: the group's size once joined, else ``WORLD_SIZE`` (1 when not launched)."""
    return dist.get_world_size() if is_distributed() else env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its node (its GPU index); 0 when not launched by torchrun."""
    return env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    """A process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """The process that logs, validates and writes files: rank 0, or the only process."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or alike) with more than one process."""
    return world_size() > 1 and "LOCAL_RANK" in os.environ


def ddp_device(device: str = "") -> torch.device:
    """``--device`` for this process: as :func:`select_device` says; under torchrun the process with
    LOCAL_RANK r takes the r-th listed CUDA id (``--device 2,3``: LOCAL_RANK 1 -> ``cuda:3``), or ``cuda:r``
    when none are listed (:func:`~yolostitch.engine.runs.parse_device` has the rules and errors)."""
    return select_device(device, local_rank() if launched() else None)


@contextlib.contextmanager
def process_group(device: str = "") -> Iterator[torch.device]:
    """Join the torchrun job (from the environment) for the block, on the device this process trains on;
    leave it on the way out. Single process: just the device.

    When the block fails, the group is abandoned rather than destroyed: a clean teardown can wait on the other
    processes (NCCL's, with collectives in flight), which are themselves waiting in a collective for this one.
    The caller should then end the process at once (:func:`abandoned`, :func:`exit_now`; the command line
    does): its exit closes its connections and tells torchrun, which stops the other processes, instead of
    letting them wait out :data:`TIMEOUT`."""
    chosen = ddp_device(device)
    joined = launched() and not dist.is_initialized()
    if joined:
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=chosen if chosen.type == "cuda" else None)
    try:
        yield chosen
    except BaseException:
        if joined:
            _abandon()
        raise
    if joined:
        dist.destroy_process_group()


def _abandon() -> None:
    """Leave the process group after a failure without waiting for anyone: nothing is torn down here (that is
    what could wait); the process's exit closes its connections and communicators."""
    global _abandoned
    _abandoned = True
    LOGGER.error("rank %d of %d failed: leaving the job without waiting for the other processes", rank(),
                 world_size())


def abandoned() -> bool:
    """This process failed inside :func:`process_group` and left its job: it should exit now."""
    return _abandoned


def exit_now(code: int) -> NoReturn:
    """End the process at once with ``code`` (stdout and stderr flushed), skipping the interpreter's shutdown,
    which may wait on threads and destructors of the abandoned process group."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # a closed or absent stream: nothing to flush
            pass
    os._exit(code)


def barrier() -> None:
    """Wait for every process (no-op when single)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first (e.g. generating a dataset or writing a label cache), then on the others,
    which find its results in place."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it (picklable objects; returned unchanged when single)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer with rank ``src``'s values, in place."""
    if is_distributed():
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=src)


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (all hold the same keys; summed in sorted-key order)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    means = dict(zip(keys, t.tolist()))
    return {k: means[k] / dist.get_world_size() for k in values}  # in the caller's order


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average ``.grad`` over the processes, as DDP does for the model, for parameters outside it (the loss
    balancer's learned task weights)."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(dist.get_world_size())


def per_process_batch(total: int) -> int:
    """``--batch-size`` is the total over all processes (stock YOLOv5): each process loads total / WORLD_SIZE."""
    n = world_size()
    if n > 1 and (total < n or total % n):
        raise FlagError(f"--batch-size {total} is the total batch over all {n} processes (WORLD_SIZE): "
                        f"give a multiple of {n}")
    return total // n


def cores_per_process() -> int:
    """This machine's cores shared among the training processes on it (for DataLoader workers)."""
    return max(1, (os.cpu_count() or 1) // env_int("LOCAL_WORLD_SIZE", 1))


def train_sampler(dataset: Dataset, seed: int, shuffle: bool = True) -> DistributedSampler | None:
    """This process's shard of each epoch's permutation (seeded by ``seed``; call ``set_epoch``), or None when
    single (the loader shuffles as usual). Rank r takes positions r, r + N, r + 2N, ... of the permutation, so
    the processes' i-th batches together are the permutation's i-th block of ``--batch-size`` images (with
    ``shuffle`` False, of the dataset's own order: ``--rect``'s blocks of one shape)."""
    if not is_distributed():
        return None
    return DistributedSampler(dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(), shuffle=shuffle,
                              seed=seed, drop_last=False)


def check_sync_bn(sync_bn: bool, device: torch.device) -> bool:
    """Whether to convert BatchNorm to SyncBatchNorm: asked for, and more than one process (alone it would
    synchronise nothing). torch's SyncBatchNorm runs on GPUs only: on the CPU it is a clear error here rather
    than a crash in the first forward."""
    if not sync_bn or world_size() == 1:
        if sync_bn:
            LOGGER.info("--sync-bn: a single process has nothing to synchronise; ignored")
        return False
    if device.type not in ("cuda", "xpu"):
        raise FlagError(f"--sync-bn: torch {torch.__version__} supports SyncBatchNorm only on GPUs, not on "
                        f"{device.type} (gloo); leave --sync-bn out, or train on CUDA")
    return True


def wrap(model: nn.Module, device: torch.device, previous: nn.Module | None = None,
         find_unused: bool = False) -> nn.Module:
    """What runs the forward: ``model`` itself when single, else a DistributedDataParallel over the parameters
    that require grad *now*.

    DDP fixes the set of parameters it reduces when it is built: a parameter frozen later would never be
    reduced (DDP waits for it, then errors), and one unfrozen later would silently train apart on each process.
    So a training stage that changes ``requires_grad`` needs a new wrapper; ``previous`` is kept when the set
    is the same. (A new DDP broadcasts rank 0's parameters and buffers, which the replicas share anyway.)
    ``find_unused``: some parameters may get no gradient in an iteration (DDP then looks for them each time).
    """
    trainable = tuple(p.requires_grad for p in model.parameters())
    if not is_distributed() or not any(trainable):
        return model  # nothing to reduce (every layer frozen): the plain module
    if isinstance(previous, nn.parallel.DistributedDataParallel) and getattr(previous, "trainable", None) == trainable:
        return previous
    wrapper = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  find_unused_parameters=find_unused)
    wrapper.trainable = trainable
    return wrapper


def no_sync(net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a forward/backward whose gradients only accumulate (no optimizer step follows):
    the reduction then happens once, at the step, over the accumulated sum."""
    if sync or not isinstance(net, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return net.no_sync()


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """Silence stdout on every process but rank 0 (stderr, for warnings and errors, stays)."""
    if is_main():
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
