"""A PNG of a few series: recent history, the forecast and its 80% and 95% intervals.

    from ml.plots import plot_forecasts
    plot_forecasts(series_by_key, forecasts_table, path, keys)   # written by `lakehouse forecast`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.data import Series

HISTORY_SHOWN = 120  # periods of history drawn before the forecast


def plot_forecasts(series: dict[tuple[str, str], Series], forecasts: pa.Table, path: Path,
                   keys: list[tuple[str, str]], title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if k in series][:6]
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(10, 2.6 * max(len(keys), 1)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        s = series[key]
        rows = forecasts.filter(pc.and_(pc.equal(forecasts["store_id"], key[0]),
                                        pc.equal(forecasts["product_id"], key[1]))).sort_by("forecast_date")
        hist_dates, hist_y = s.dates[-HISTORY_SHOWN:], s.y[-HISTORY_SHOWN:]
        ax.plot(hist_dates, hist_y, color="0.3", lw=1, label="units ordered")
        if rows.num_rows:
            days = np.array(rows["forecast_date"].to_pylist(), dtype="datetime64[D]")
            col = {name: rows[name].to_numpy() for name in rows.column_names if name.startswith("yhat")}
            ax.fill_between(days, col["yhat_lower_95"], col["yhat_upper_95"], color="tab:blue", alpha=0.15,
                            label="95%")
            ax.fill_between(days, col["yhat_lower_80"], col["yhat_upper_80"], color="tab:blue", alpha=0.3,
                            label="80%")
            ax.plot(days, col["yhat"], color="tab:blue", lw=1.5, label=f"forecast ({rows['model'][0]})")
        ax.set_title(f"store {key[0]}, product {key[1]}", fontsize=9, loc="left")
        ax.legend(loc="upper left", fontsize=7, ncols=4)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
