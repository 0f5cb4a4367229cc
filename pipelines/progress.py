"""Live progress of work that runs inside Beam on this machine (the DirectRunner shares our process).

DoFns report what they have read with `advance(n)`; the CLI's progress bar polls `done()`. On Dataflow
the workers are other machines, nothing polls, and the calls cost nothing.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = 0


def advance(n: int) -> None:
    global _done
    with _lock:
        _done += n


def done() -> int:
    return _done


def reset() -> None:
    global _done
    with _lock:
        _done = 0
