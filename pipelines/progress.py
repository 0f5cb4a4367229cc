"""Live progress of work that runs inside Beam on this machine (DirectRunner shards report back).

DoFns report the bytes they have read with `advance(n)`; the CLI's progress bar polls `done()`. With
several local shards (processes) the count lives in shared memory (`share()` in the parent, `attach()`
in each child). On Dataflow the workers are other machines, nothing polls, and the calls cost nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import threading

_lock = threading.Lock()
_done = 0
_shared = None  # a multiprocessing.Value when shards run in other processes


def advance(n: int) -> None:
    global _done
    if _shared is not None:
        with _shared.get_lock():
            _shared.value += n
        return
    with _lock:
        _done += n


def done() -> int:
    return _shared.value if _shared is not None else _done


def reset() -> None:
    global _done, _shared
    with _lock:
        _done, _shared = 0, None


def share(ctx: mp.context.BaseContext):
    """Move the count into shared memory for child processes; returns what to pass to `attach`."""
    global _shared
    value = ctx.Value("q", done())
    _shared = value
    return value


def attach(value) -> None:
    """Process-pool initializer: report into the parent's shared count."""
    global _shared
    _shared = value
