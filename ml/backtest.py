"""Per series: clean, classify, backtest the candidate models, choose one, refit it on all data, forecast.

    from ml.backtest import Config, forecast_series
    result = forecast_series(series, Config(horizon=28, folds=3, models=("prophet", "snaive", "tsb")))
    result.model, result.forecast.yhat, result.metrics   # chosen model, forecast, ml.backtest_metrics rows

Rolling origin: fold k (k = folds .. 1) trains on all periods before n - k * horizon and forecasts the next
`horizon` periods, so the folds tile the last folds x horizon periods without overlap. The chosen model
is chosen champion/challenger on the absolute error summed over the folds (within one series the same
ranking as WAPE): the default model for the series' kind (Prophet; TSB for slow movers) stays unless
another beats it by more than CHALLENGER_MARGIN; ties go to the model listed first in MODELS. The
seasonal naive baseline is always backtested, as the reference every other score is compared with, but
is only chosen when it was asked for. Prophet
fits of one series warm-start from the previous fold's parameters, and the final refit from the last fold.

Prediction intervals are conformal where a backtest exists: the point forecast plus quantiles of the
model's own backtest errors on this series (all folds for the final forecast; for the backtest's own
coverage figures, each fold is scored with intervals calibrated on the other folds only, so coverage is
measured out of sample). With fewer than two folds the model's own intervals are used (see ml.models).

Bad series never raise: a series that is too short, all zeros or constant gets the seasonal naive forecast
without a backtest; negative values are set to zero; slow movers (average demand interval above 1.32,
Syntetos-Boylan, counted over the days the store traded) skip Prophet; a model that fails is dropped for
that series. The reasons go to `notes` (and `ml.backtest_metrics.note`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ml import metrics, models
from ml.data import Series
from ml.metrics import Score

#: periods of history below which a series only gets the baseline
MIN_HISTORY = {"D": 28, "W": 8}
#: how much lower a challenger's backtest error must be to replace the default model
CHALLENGER_MARGIN = 0.05
#: average demand interval above which a series is intermittent (Syntetos & Boylan 2005)
ADI_INTERMITTENT = 1.32


@dataclass(frozen=True)
class Config:
    horizon: int = 28
    folds: int = 3
    models: tuple[str, ...] = models.DEFAULT_MODELS
    keep_json: bool = True  # Prophet final fits as JSON (model_to_json)


@dataclass
class SeriesResult:
    store_id: str
    product_id: str
    model: str
    forecast: models.Forecast
    forecast_dates: np.ndarray
    metrics: list[dict] = field(default_factory=list)  # rows of ml.backtest_metrics (without run_id)
    scores: dict[str, Score] = field(default_factory=dict)  # backtest scores per model tried
    oracle: Score | None = None  # the simulator's expected demand on the chosen model's backtest points
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.store_id, self.product_id


def diagnose(series: Series, wanted: tuple[str, ...]) -> tuple[Series, list[str], list[str], bool]:
    """(cleaned series, candidate models, notes, backtest?) for one series."""
    notes = list(series.issues)
    y = series.y.astype(float).copy()
    negative = int((y < 0).sum())
    if negative:
        notes.append(f"{negative} negative value(s) set to 0")
        y[y < 0] = 0.0
    series = replace(series, y=y)
    observed = y[~np.isnan(y)]
    if observed.size < MIN_HISTORY[series.freq]:
        return series, [models.BASELINE], [*notes, f"too short ({observed.size} periods with data)"], False
    if not observed.any():
        return series, [models.BASELINE], [*notes, "all zeros"], False
    if np.all(observed == observed[0]):
        return series, [models.BASELINE], [*notes, f"constant ({observed[0]:g})"], False
    candidates = [m for m in models.MODELS if m in wanted]
    # average demand interval over the days the store traded (a closed day is no evidence of slow demand)
    trading = ~np.isnan(y) & (series.store_open if series.store_open is not None else True)
    adi = max(int(trading.sum()), 1) / max(int((y[trading] > 0).sum()), 1)
    if adi > ADI_INTERMITTENT and "prophet" in candidates:
        candidates.remove("prophet")
        notes.append(f"slow mover (ADI {adi:.1f}): Prophet skipped")
    return series, candidates or [models.BASELINE], notes, True


def _fit(name: str, series: Series, horizon: int, **kw) -> models.Forecast:
    return models.MODELS[name](series, horizon, **kw).clipped()


def _default_choice(candidates: list[str]) -> str:
    """Without a backtest: Prophet where it is a candidate, else the intermittent model, else the baseline."""
    for name in ("prophet", "tsb", "croston", "adida", "ets"):
        if name in candidates:
            return name
    return candidates[0]


def choose(candidates: list[str], errors: dict[str, float]) -> str:
    """Champion/challenger: the default model for the series' kind (Prophet, else the intermittent model) stays
    unless a challenger's backtest error is lower by more than CHALLENGER_MARGIN. Three folds are few points,
    and switching models on noise made the held-out error worse in the benchmark."""
    eligible = [m for m in candidates if m in errors]
    if not eligible:
        return _default_choice(candidates)
    champion = _default_choice(eligible)
    best = min(eligible, key=lambda m: (errors[m], candidates.index(m)))
    return best if errors[best] < (1 - CHALLENGER_MARGIN) * errors[champion] else champion


def forecast_series(series: Series, config: Config) -> SeriesResult:
    started = time.perf_counter()
    series, candidates, notes, backtest = diagnose(series, config.models)
    h, n = config.horizon, len(series.y)
    folds = 0
    if backtest:
        folds = min(config.folds, max((n - MIN_HISTORY[series.freq]) // h, 0))
        if folds < config.folds:
            notes.append(f"history allows {folds} of {config.folds} backtest folds")
    scores: dict[str, Score] = {}
    errors: dict[str, float] = {}
    inits: dict[str, dict | None] = {}
    oracle_by_model: dict[str, Score] = {}
    scale = metrics.naive_scale(series.y[: n - folds * h], series.season) if folds else float("nan")
    tried = [*candidates, *([models.BASELINE] if models.BASELINE not in candidates else [])]
    residuals: dict[str, list[np.ndarray]] = {}
    for name in tried if folds else []:
        runs, init = [], None
        try:
            for k in range(folds, 0, -1):
                origin = n - k * h
                fc = _fit(name, series.head(origin), h, init=init)
                init = fc.params
                runs.append((origin, fc))
        except Exception as e:  # one model failing on one series never fails the run
            if name in candidates:
                candidates.remove(name)
            notes.append(f"{name} failed: {type(e).__name__}: {str(e)[:120]}")
            continue
        residuals[name] = [series.y[o: o + h] - fc.yhat for o, fc in runs]
        total, oracle = Score(), Score()
        for j, (origin, fc) in enumerate(runs):
            actual = series.y[origin: origin + h]
            if len(runs) > 1:  # each fold's intervals calibrated on the other folds' errors only
                fc = calibrated(fc, [r for i, r in enumerate(residuals[name]) if i != j])
            total = total + Score.of(actual, fc.yhat, fc.lo80, fc.hi80, fc.lo95, fc.hi95, scale)
            if series.expected is not None:
                e = series.expected[origin: origin + h]
                oracle = oracle + Score.of(actual, e, e, e, e, e, scale)
        scores[name], errors[name], inits[name], oracle_by_model[name] = total, total.abs_error, init, oracle
    if not candidates:
        candidates = [models.BASELINE]
    chosen = choose(candidates, errors)
    try:
        final = _fit(chosen, series, h, init=inits.get(chosen), keep_json=config.keep_json)
        if len(residuals.get(chosen, ())) > 1:
            final = calibrated(final, residuals[chosen])
    except Exception as e:
        notes.append(f"{chosen} failed on the final fit: {type(e).__name__}: {str(e)[:120]}")
        chosen = models.BASELINE
        final = _fit(chosen, series, h)
    note = "; ".join(notes) or None
    rows = []
    for name in scores or {chosen: Score()}:
        s = scores.get(name, Score())
        rows.append({"store_id": series.store_id, "product_id": series.product_id, "model": name,
                     "chosen": name == chosen, "folds": folds if name in scores else 0, "points": s.points,
                     "actual_units": s.actual if s.points else None, "wape": _num(s.wape), "mase": _num(s.mase),
                     "bias": _num(s.bias), "coverage_80": _num(s.coverage_80),
                     "coverage_95": _num(s.coverage_95), "note": note})
    return SeriesResult(series.store_id, series.product_id, chosen, final, series.future_dates(h), rows, scores,
                        oracle_by_model.get(chosen) if series.expected is not None else None, notes,
                        time.perf_counter() - started)


def calibrated(fc: models.Forecast, residuals: list[np.ndarray]) -> models.Forecast:
    """Conformal intervals: the point forecast plus quantiles of the model's own backtest errors."""
    r = np.concatenate(residuals)
    r = r[~np.isnan(r)]
    if r.size < 10:
        return fc
    q = conformal_quantiles(r, models.QUANTILES)
    y = fc.yhat
    return replace(fc, lo80=y + q[1], hi80=y + q[2], lo95=y + q[0], hi95=y + q[3]).clipped()


def conformal_quantiles(errors: np.ndarray, levels) -> np.ndarray:
    """Quantiles of `errors` with split conformal's finite-sample correction: with n errors, the upper
    bound at level q is the ceil((n + 1) q)-th smallest error (the lower bound mirrors it), so a bound
    is never set from fewer points than its coverage needs (plain np.quantile under-covers small n)."""
    e = np.sort(errors)
    n = e.size
    out = []
    for q in levels:
        if q >= 0.5:
            k = min(int(np.ceil((n + 1) * q)), n)  # 1-based rank
        else:
            k = max(int(np.floor((n + 1) * q)), 1)
        out.append(e[k - 1])
    return np.array(out)


def _num(x: float) -> float | None:
    return None if x != x else float(x)
