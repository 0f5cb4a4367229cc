"""The child process of `pipelines.transform.build`: runs dbt commands in one interpreter, parsing the project
once (dbt's start-up and parse cost seconds each), then each later command on that manifest.

    python -m pipelines.dbt_runner '["parse", ...]'
    stdin, one line: [["sources", ["test", ...]], ["build", ["build", ...]]]

It parses first, then reads the later commands from stdin: its parent prepares the warehouse and decides
them meanwhile. Its stdout is dbt's JSON log, plus one line before and after each later command
(`PHASE_START`, `PHASE_DONE` with the command's node results). It imports nothing of the project, only
dbt: the child starts in the time dbt itself needs.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

PHASE_START, PHASE_DONE = "LakehousePhaseStart", "LakehousePhaseDone"


def main(parse: list[str]) -> int:
    from dbt.cli.main import dbtRunner

    def emit(name: str, **data: Any) -> None:
        print(json.dumps({"info": {"name": name, "level": "debug", "msg": ""}, "data": data}), flush=True)

    parsed = dbtRunner().invoke(parse)
    if not parsed.success:
        return 2
    phases = json.loads(sys.stdin.readline() or "[]")
    # The manifest and dbt's own long-lived objects stay to the end: out of the garbage collector's sight
    # (each full collection would walk them again), and out of the final collection at exit.
    gc.freeze()
    runner = dbtRunner(manifest=parsed.result)
    for phase, args in phases:
        emit(PHASE_START, phase=phase)
        res = runner.invoke(args)
        results = [{"unique_id": r.node.unique_id, "status": getattr(r.status, "value", str(r.status)),
                    "execution_time": r.execution_time, "message": r.message or "", "failures": r.failures}
                   for r in (res.result or [])]
        emit(PHASE_DONE, phase=phase, returncode=0 if res.success else (1 if res.exception is None else 2),
             results=results)
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
