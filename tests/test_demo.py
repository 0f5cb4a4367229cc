"""`lakehouse demo` end to end on a tiny dataset: every step runs (simulate, import, both backfills, the live
stream with its reconciliation, dbt, the forecast and the forecast marts) and leaves what the summary claims in
the warehouse. The file-stream fallback, which the demo takes on a machine without the Pub/Sub emulator, has its
own test below.

The demo uses the emulator CI starts (`LAKEHOUSE_PUBSUB_EMULATOR_HOST`), or starts and stops one on a free port;
its topic and subscription names are the test's own, so tests running alongside are not disturbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from netutil import free_port  # tests/ is on sys.path

from pipelines import cli, pubsub, reconcile, warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).parent / "fixtures" / "online_retail_ii_sample.csv"
LAKEHOUSE = Path(sys.executable).with_name("lakehouse")


def _own_topics(home: Path, emulator_host: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"LAKEHOUSE_HOME": str(home), "LAKEHOUSE_PUBSUB_EMULATOR_HOST": emulator_host,
            "LAKEHOUSE_EVENTS_TOPIC": f"demo-events-{tag}", "LAKEHOUSE_EVENTS_SUBSCRIPTION": f"demo-stream-{tag}",
            "LAKEHOUSE_DEAD_LETTER_TOPIC": f"demo-dead-{tag}", "LAKEHOUSE_DEAD_LETTER_SUBSCRIPTION": f"demo-dl-{tag}"}


def _count(con, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def test_demo_runs_every_step_on_a_tiny_dataset(tmp_path):
    host = os.environ.get("LAKEHOUSE_PUBSUB_EMULATOR_HOST")
    if not (host and pubsub.listening(host)):
        # the demo starts an emulator there (or falls back to files without one) and stops it
        host = f"127.0.0.1:{free_port()}"
    home = tmp_path / "lake"
    env = {**os.environ, **_own_topics(home, host)}
    args = [str(LAKEHOUSE), "demo", "--data", str(tmp_path / "data"), "--days", "21", "--stores", "2",
            "--products", "4", "--retail-csv", str(FIXTURE), "--retail-start", "2010-10-01",
            "--retail-end", "2010-10-31", "--stream-seconds", "5", "--stream-rate", "40"]
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    for heading in ("1. Simulate demand", "2. Import real order history", "3. Backfill simulated",
                    "4. Backfill real history", "5. Stream live events", "6. The lakehouse", "7. Transform with dbt",
                    "8. Forecast", "9. Build the forecast marts", "The demo's steps"):
        assert heading in output, heading
    assert output.count(": reconciles") == 2  # both backfills' equations
    assert "nothing lost, nothing doubled" in output  # the stream's reconciliation with its archive
    assert "dbt build (local) passed" in output and "FAILED" not in output

    settings = Settings(home=home)
    with warehouse.connect(settings) as con:
        runs = dict(con.execute("select job, count(*) from ops.pipeline_runs group by all").fetchall())
        assert runs == {"backfill": 2, "stream": 1}
        sources = con.execute("select count(distinct store_id) filter (where source_uri like '%online_retail%'), "
                              "count(distinct store_id) filter (where message_id is not null) "
                              "from silver.order_events").fetchone()
        assert sources[0] > 0 and sources[1] > 0  # real history and streamed events both reached silver
        assert _count(con, "select count(*) from bronze.dead_letter") > 0  # the simulator's bad lines
        assert _count(con, "select count(*) from gold.fact_daily_demand") > 0
        forecasts = _count(con, "select count(*) from ml.forecasts")
        assert forecasts == 2 * 4 * 28  # every simulated series, the whole horizon
        assert _count(con, "select count(*) from gold.fact_demand_forecast") == forecasts
        assert _count(con, "select count(*) from gold.mart_forecast_accuracy") == 2 * 4
    assert list((home / "ml" / "plots").glob("*.png"))


def test_demo_stream_falls_back_to_files(tmp_path, monkeypatch):
    """Without the emulator the demo streams through rotating archive files and still reconciles exactly."""
    sim = tmp_path / "sim"
    simulate(sim, days=1, stores=2, products=3, seed=7)
    for name, value in _own_topics(tmp_path / "lake", f"127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(pubsub, "emulator_installed", lambda: False)
    cli.demo_stream(sim, stores=2, products=3, seconds=4, rate=40)

    settings = Settings(home=tmp_path / "lake")
    with warehouse.connect(settings) as con:
        streamed = _count(con, "select count(*) from silver.order_events") + _count(
            con, "select count(*) from silver.inventory_events")
        assert streamed > 0
        loads = con.execute("select job, count(*) from ops.pipeline_runs group by all").fetchall()
        assert loads and {job for job, _ in loads} == {"backfill"}  # each new batch of files is one backfill load
    assert list((settings.archive_dir / "events").glob("*.jsonl"))
    check = reconcile.reconcile(settings)
    assert check.ok and check.archive_lines > 0, check
