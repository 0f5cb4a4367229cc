"""The child process of `pipelines.transform.build` and `.docs`: runs dbt commands in one interpreter,
parsing the project once (dbt's start-up and parse cost seconds each), then each later command on that
manifest.

    python -m pipelines.dbt_runner '["parse", ...]'
    stdin, one line: [["sources", ["test", ...]], ["build", ["build", ...]]]

It parses first, then reads the later commands from stdin: its parent prepares the warehouse and decides
them meanwhile. Its stdout is one JSON line per dbt event the parent hears (a node started or finished, a
warning, an error: `{"info": {name, level, msg}, "data": {index, total, status, node_info}}`, a few fields
of dbt's own JSON log line), plus one line before and after each later command (`PHASE_START`, `PHASE_DONE`
with the command's node results). dbt's own console log is off: formatting every event of a rebuild as JSON
took ~1 s of it (profiled). It imports nothing of the project, only dbt: the child starts in the
time dbt itself needs.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
from typing import Any

PHASE_START, PHASE_DONE = "LakehousePhaseStart", "LakehousePhaseDone"
#: dbt's events of a finished node
RESULT_EVENTS = frozenset({"LogModelResult", "LogTestResult", "LogSeedResult", "LogSnapshotResult", "LogNodeResult",
                           "LogSkipResult", "RunResultError", "LogFreshnessResult"})
#: the events passed on besides warnings and errors
FORWARDED = RESULT_EVENTS | {"LogStartLine"}
_LOCK = threading.Lock()  # dbt's threads send events too


def emit(name: str, level: str = "debug", msg: str = "", **data: Any) -> None:
    line = json.dumps({"info": {"name": name, "level": level, "msg": msg}, "data": data}) + "\n"
    with _LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def forward(event: Any) -> None:
    """dbt's callback for every event (an EventMsg): pass on the few the parent hears."""
    info = event.info
    if info.name not in FORWARDED and info.level not in ("warn", "error"):
        return
    fields = event.data.DESCRIPTOR.fields_by_name
    data = {name: getattr(event.data, name) for name in ("index", "total", "status") if name in fields}
    if "node_info" in fields and event.data.HasField("node_info"):
        data["node_info"] = {"node_name": event.data.node_info.node_name,
                             "node_status": event.data.node_info.node_status}
    emit(info.name, info.level, info.msg, **data)


def main(parse: list[str]) -> int:
    from dbt.cli.main import dbtRunner

    parsed = dbtRunner(callbacks=[forward]).invoke(parse)
    if not parsed.success:
        return 2
    phases = json.loads(sys.stdin.readline() or "[]")
    # The manifest and dbt's own long-lived objects stay to the end: out of the garbage collector's sight
    # (each full collection would walk them again), and out of the final collection at exit.
    gc.freeze()
    runner = dbtRunner(manifest=parsed.result, callbacks=[forward])
    for phase, args in phases:
        emit(PHASE_START, phase=phase)
        res = runner.invoke(args)
        results = [{"unique_id": r.node.unique_id, "status": getattr(r.status, "value", str(r.status)),
                    "execution_time": r.execution_time, "message": r.message or "", "failures": r.failures}
                   for r in getattr(res.result, "results", None) or []]  # (docs generate returns a catalog)
        emit(PHASE_DONE, phase=phase, returncode=0 if res.success else (1 if res.exception is None else 2),
             results=results)
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
