"""Forecast accuracy: WAPE, MASE, bias and prediction-interval coverage, per series and pooled over series.

    from ml import metrics
    metrics.wape(actual, forecast)                  # sum|f - a| / sum(a)
    metrics.mase(actual, forecast, history, season=7)
    metrics.coverage(actual, lower, upper)          # share of actuals inside [lower, upper]

Every function takes plain arrays, ignores points whose actual is NaN and returns NaN when the metric is
undefined (no actuals, all-zero actuals for WAPE and bias, a constant history for MASE) rather than
dividing by zero. `Score` adds up the sums behind them so that scores of many series and folds pool exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

NAN = float("nan")


def _pair(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    keep = ~np.isnan(a)
    return a[keep], f[keep]


def wape(actual, forecast) -> float:
    """Weighted absolute percentage error: sum|f - a| / sum|a|."""
    a, f = _pair(actual, forecast)
    total = np.abs(a).sum()
    return float(np.abs(f - a).sum() / total) if total > 0 else NAN


def bias(actual, forecast) -> float:
    """sum(f - a) / sum(a): positive means over-forecasting."""
    a, f = _pair(actual, forecast)
    total = a.sum()
    return float((f - a).sum() / total) if total > 0 else NAN


def naive_scale(history, season: int) -> float:
    """Mean absolute error of the in-sample seasonal naive forecast (lag `season`; lag 1 when too short)."""
    h = np.asarray(history, float)
    lag = season if len(h) > season else 1
    if len(h) <= lag:
        return NAN
    diff = np.abs(h[lag:] - h[:-lag])
    diff = diff[~np.isnan(diff)]
    return float(diff.mean()) if diff.size else NAN


def mase(actual, forecast, history, season: int) -> float:
    """Mean absolute scaled error: MAE of the forecast / MAE of the in-sample seasonal naive forecast."""
    a, f = _pair(actual, forecast)
    scale = naive_scale(history, season)
    if not a.size or not scale > 0:
        return NAN
    return float(np.abs(f - a).mean() / scale)


def coverage(actual, lower, upper) -> float:
    """Share of actuals inside the closed interval [lower, upper]."""
    a = np.asarray(actual, float)
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    keep = ~np.isnan(a)
    if not keep.any():
        return NAN
    return float(((lo[keep] <= a[keep]) & (a[keep] <= hi[keep])).mean())


@dataclass
class Score:
    """The sums behind the metrics; add Scores of folds or series, then read the pooled metrics off."""

    points: int = 0
    actual: float = 0.0
    abs_error: float = 0.0
    error: float = 0.0
    inside_80: int = 0
    inside_95: int = 0
    scaled_error: float = 0.0  # sum of |e| / scale, for MASE
    scaled_points: int = 0

    @classmethod
    def of(cls, actual, yhat, lo80, hi80, lo95, hi95, scale: float = NAN) -> Score:
        a = np.asarray(actual, float)
        keep = ~np.isnan(a)
        a, f = a[keep], np.asarray(yhat, float)[keep]
        inside = [int(((np.asarray(lo, float)[keep] <= a) & (a <= np.asarray(hi, float)[keep])).sum())
                  for lo, hi in ((lo80, hi80), (lo95, hi95))]
        err = f - a
        scaled = scale > 0
        return cls(points=int(a.size), actual=float(a.sum()), abs_error=float(np.abs(err).sum()),
                    error=float(err.sum()), inside_80=inside[0], inside_95=inside[1],
                    scaled_error=float(np.abs(err).sum() / scale) if scaled else 0.0,
                    scaled_points=int(a.size) if scaled else 0)

    def __add__(self, other: Score) -> Score:
        return Score(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def wape(self) -> float:
        return self.abs_error / self.actual if self.actual > 0 else NAN

    @property
    def bias(self) -> float:
        return self.error / self.actual if self.actual > 0 else NAN

    @property
    def mase(self) -> float:
        return self.scaled_error / self.scaled_points if self.scaled_points else NAN

    @property
    def coverage_80(self) -> float:
        return self.inside_80 / self.points if self.points else NAN

    @property
    def coverage_95(self) -> float:
        return self.inside_95 / self.points if self.points else NAN


def total(scores) -> Score:
    return sum(scores, Score())
