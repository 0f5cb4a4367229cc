"""How a local backfill splits its input files over processes, and where those processes come from.

Light on purpose (no Beam, no Arrow): the CLI starts the fork server with it before it imports Beam itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from multiprocessing import forkserver

SHARD_MIN_BYTES = 64 << 20
#: what a shard process runs; the fork server imports it (and so Beam) once, before it forks any shard
SHARD_MODULE = "pipelines.backfill"


def default_workers(paths: list[str], runner: str) -> int:
    """One process per core (at most 8) for local inputs of 64 MB or more; one otherwise."""
    local = [p for p in paths if "://" not in p]
    if runner != "DirectRunner" or len(local) < 2 or sum(os.path.getsize(p) for p in local) < SHARD_MIN_BYTES:
        return 1
    return min(len(os.sched_getaffinity(0)), len(local), 8)


def plan_shards(paths: list[str], workers: int) -> list[list[str]]:
    """Split sorted paths into `workers` contiguous groups of about equal bytes.

    Contiguous, because producers write neighbouring files close in time: copies and late events of one
    day mostly stay within one shard.
    """
    if workers <= 1 or len(paths) < 2:
        return [paths]
    sizes = [os.path.getsize(p) if "://" not in p else 1 for p in paths]
    target, shards, current, acc = sum(sizes) / workers, [], [], 0
    for path, size in zip(paths, sizes):
        current.append(path)
        acc += size
        if acc >= target * (len(shards) + 1) and len(shards) < workers - 1:
            shards.append(current)
            current = []
    if current:
        shards.append(current)
    return shards


def shard_context() -> mp.context.BaseContext:
    """Where shard processes come from. A process with no other thread forks them: they start at once, Beam imported.
    Forking a process that runs threads (the CLI's progress bar, a finished pipeline's threads) is unsafe; there they
    come from the fork server, a fresh single-threaded process that imported `SHARD_MODULE` once (spawning each would
    cost it a few seconds of imports first)."""
    if threading.active_count() == 1:
        return mp.get_context("fork")
    return start_fork_server()


def start_fork_server() -> mp.context.BaseContext:
    """Start the fork server now (unless it runs) and return its context; its import of Beam then overlaps the
    caller's. A server started before by other code (without this preload) serves too: its shards import on start."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([SHARD_MODULE])
    forkserver.ensure_running()
    return context
