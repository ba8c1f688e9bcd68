"""Running the per-layer program on a batch: a chunk of samples at a time, the chunks on
threads where threadpoolctl is installed (the BLAS held to one thread meanwhile), and the
allocator warmed once so that the chunks' arrays do not each cost page faults.

Imports numpy and the standard library only (threadpoolctl, where installed, inside a
function): the exported modules need nothing else.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy


def _run_layers(programs, layout, x, y, params, chosen, per_sample, scale):
    """The per-layer program on the batch, ``batch_chunk`` samples at a time, the chunks
    shared among threads (see ``_map_chunks``): losses (B,), the gradient of x per sample,
    the others per sample — each chunk writes its rows of them — or summed over the
    chunks."""
    _warm_allocator()
    size = len(x)
    if size == 1 and per_sample:  # one sample's gradients are its batch's: the quicker code
        losses, grads = programs.layers(x, y, params, *chosen, {}, False, scale)
        return losses, {name: g if name == "x" else g[None] for name, g in grads.items()}
    controller, workers, chunk = None, 1, programs.batch_chunk
    if layout.couples:  # batch statistics: the whole batch at once
        chunk = size
    # The BLAS is asked for its threads (10 µs) only where a chunk can be worth a thread.
    elif size > 1 and min(size, chunk) * programs.sample_bytes >= THREADS_FROM_BYTES:
        controller = _blas_controller()
        threads = _blas_threads(controller) if controller else 1
        shared = min(chunk, -(-size // threads))  # a chunk for each thread at least
        if shared * programs.sample_bytes >= THREADS_FROM_BYTES:  # still worth a thread
            workers, chunk = threads, shared
    losses, dx = numpy.empty(size, x.dtype), numpy.empty(x.shape, x.dtype)
    shapes = layout.parameters.items() if per_sample else ()
    rows = {name: numpy.empty((size, *shape), x.dtype) for name, shape in shapes}

    def run_chunk(part):
        grads = {name: array[part] for name, array in rows.items()}
        losses[part], grads = programs.layers(
            x[part], y[part], params, *chosen, grads, per_sample, scale
        )
        dx[part] = grads.pop("x")
        return grads

    parts = [slice(start, start + chunk) for start in range(0, size, chunk)]
    results = _map_chunks(run_chunk, parts, controller, workers)
    if per_sample:
        return losses, {"x": dx, **rows}
    summed = results[0]
    for grads in results[1:]:
        for name, grad in grads.items():
            summed[name] += grad
    return losses, {"x": dx, **summed}


# Chunks whose largest array is smaller than this run in one thread: a thread's hand-over and
# the GIL between numpy's calls then cost more than the second core gains (measured: the
# article's network, 16 values a sample, 1.7x slower on two threads at batch 1024; network B,
# 4.6 kB a sample, 1.4x slower at 256, even summed and 1.3x faster per sample at 512, 1.2x
# and 1.4x faster at 1024; network C, 21 kB a sample, 1.2x faster at 128 and 1.3x at 1024).
THREADS_FROM_BYTES = 2**20


def _map_chunks(function, parts, controller, workers):
    """[function(part) for part in parts], on this many threads (one: in this thread), each
    thread's matrix products held to one core by threadpoolctl's ``controller`` of the BLAS
    meanwhile: two threads each calling a multi-threaded BLAS run slower than one. numpy lets
    go of the GIL in its loops, so a second thread runs a chunk's elementwise work on the
    second core, which BLAS alone would leave idle (network C of benchmarks/numeric.py, batch
    1024: 1.4x faster on 2 cores)."""
    workers = min(workers, len(parts))
    if workers < 2:
        return [function(part) for part in parts]
    # One call at a time holds the BLAS to one thread: threadpoolctl restores the number it
    # found, so overlapping holds could restore one hold's 1 for good. A call from another
    # thread meanwhile runs its chunks in turn.
    holding = _this_process()["holding"]
    if not holding.acquire(blocking=False):
        return [function(part) for part in parts]
    try:
        with controller.limit(limits=1, user_api="blas"):
            return list(_chunk_pool(workers).map(function, parts))
    finally:
        holding.release()


# What running chunks keeps between calls: "controller", threadpoolctl's view of the BLAS
# (None: none); "pool", (a thread pool, its size); "holding", the lock of the one call that
# holds the BLAS to one thread; "pid", the process they belong to; "warm", once the
# allocator is.
_RUNNING = {}


def _this_process():
    """``_RUNNING`` as of this process. A child forked from a process that ran chunks on
    threads (multiprocessing's default on Linux) inherits its pool without the pool's
    threads — work handed to it would wait for ever — and the BLAS's lock as the parent's
    threads held it at the fork: the child makes both anew."""
    pid = os.getpid()
    if _RUNNING.get("pid") != pid:
        _RUNNING.pop("pool", None)  # the parent's: never shut down here, its threads are not ours
        _RUNNING["holding"] = threading.Lock()
        _RUNNING["pid"] = pid
    return _RUNNING


def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, found once; None without
    threadpoolctl or when it finds no BLAS."""
    if "controller" not in _RUNNING:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            controller = None
        else:
            controller = ThreadpoolController().select(user_api="blas") or None
        _RUNNING["controller"] = controller
    return _RUNNING["controller"]


def _blas_threads(controller):
    """The number of threads the BLAS is set to use now (OPENBLAS_NUM_THREADS and the like;
    by default, one per core): a batch's chunks run on as many. Without threadpoolctl, the
    chunks run one after another."""
    return max(info["num_threads"] for info in controller.info())


def _chunk_pool(workers):
    """A pool of this many threads, kept for the next call (a new pool costs ~100 µs)."""
    pool, size = _this_process().get("pool", (None, 0))
    if size != workers:
        if pool is not None:
            pool.shutdown(wait=False)  # its threads end once idle
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="gradients")
        _RUNNING["pool"] = pool, workers
    return pool


def _warm_allocator():
    """Allocate and free a 30 MB block, once per process. glibc's malloc serves blocks from
    fresh mmap'ed memory until a freed block raises its threshold (up to 32 MB), and hands
    freed memory back to the system past twice that; a chunk's arrays, allocated and freed
    on every call, then each cost page faults: network C at batch 1024 ran 2.7x slower
    until a block that size had been freed (importing torch does it too). Elsewhere a
    no-op."""
    if "warm" not in _RUNNING:
        block = numpy.empty(WARM_BYTES // 8)
        del block
        _RUNNING["warm"] = True


WARM_BYTES = 30 * 2**20  # under glibc's largest threshold (32 MB on 64-bit machines)
