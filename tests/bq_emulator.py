"""A local BigQuery emulator (bqemulator) for the tests, run as a subprocess and stopped by PID.

    python tests/bq_emulator.py --rest-port 9050 --grpc-port 9060     # by hand

At start-up bqemulator's DuckDB engine installs DuckDB's spatial and file-format extensions, which are
downloads and fail offline; this launcher skips both (GEOGRAPHY and ST_* functions then do not work,
and nothing here uses them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from netutil import free_port  # tests/ is on sys.path


@contextmanager
def running(project: str, log_path: Path, timeout: float = 60.0):
    """Start the emulator; yields its REST endpoint (http://127.0.0.1:PORT); stops it by PID on exit."""
    rest, grpc = free_port(), free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--rest-port", str(rest), "--grpc-port", str(grpc),
                                 "--project", project, "--ephemeral", "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/{project}/datasets", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bqemulator did not answer within {timeout:.0f} s") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> None:
    from bqemulator.cli import main as cli
    from bqemulator.storage.engine import DuckDBEngine

    DuckDBEngine._load_spatial = lambda self: None  # INSTALL spatial: a download
    DuckDBEngine._load_format_extensions = lambda self: None  # format extensions: downloads too
    cli(["start", *argv], prog_name="bqemulator")


if __name__ == "__main__":
    main(sys.argv[1:])
