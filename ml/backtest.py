"""Per series: clean, classify, backtest the candidate models, choose one, refit it on all data, forecast.

    from ml.backtest import Config, calibrate, fit_series, forecast_series
    result = forecast_series(series, Config(horizon=28, folds=3, models=("prophet", "snaive", "tsb")))
    result.model, result.forecast.yhat, result.metrics   # chosen model, forecast, ml.backtest_metrics rows
    results = calibrate([fit_series(s, config) for s in many])   # intervals calibrated on all of them

Rolling origin: fold k (k = folds .. 1) trains on all periods before n - k * horizon and forecasts the next
`horizon` periods, so the folds tile the last folds x horizon periods without overlap. The chosen model
is chosen champion/challenger on the absolute error summed over the folds (within one series the same
ranking as WAPE): the default model for the series' kind (Prophet; TSB for slow movers) stays unless
another beats it by more than CHALLENGER_MARGIN; ties go to the model listed first in MODELS. The
seasonal naive baseline is always backtested, as the reference every other score is compared with, but
is only chosen when it was asked for. Prophet
fits of one series warm-start from the previous fold's parameters, and the final refit from the last fold.

Prediction intervals are conformal where a backtest exists, pooled over many series (`calibrate`): the
point forecast plus quantiles of the chosen models' backtest errors, each error scaled by the level of its
forecast (`spread`), so that one pool serves slow and fast movers (for the backtest's own coverage figures,
each fold is scored with a pool of the other folds only, so coverage is measured out of sample). With
fewer than MIN_CALIBRATION errors the model's own intervals are used (see ml.models).

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
class FoldForecast:
    """One backtest forecast: fold `k` counts horizons back from the end of the data (1 = the last)."""

    k: int
    actual: np.ndarray
    forecast: models.Forecast  # clipped, with the model's own intervals
    expected: np.ndarray | None = None  # the simulator's expected demand on the same periods


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
    #: what `calibrate` needs: each model's backtest forecasts, the folds run and the MASE scale
    backtests: dict[str, list[FoldForecast]] = field(default_factory=dict)
    folds: int = 0
    scale: float = float("nan")

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
    """One series on its own: `fit_series`, then intervals calibrated on its own backtest errors."""
    return calibrate([fit_series(series, config)])[0]


def fit_series(series: Series, config: Config) -> SeriesResult:
    """Backtest the candidates, choose, refit the chosen model on all data and forecast. The intervals are the
    model's own until `calibrate` replaces them, and the scores and metric rows come from `calibrate` too."""
    started = time.perf_counter()
    series, candidates, notes, backtest = diagnose(series, config.models)
    h, n = config.horizon, len(series.y)
    folds = 0
    if backtest:
        folds = min(config.folds, max((n - MIN_HISTORY[series.freq]) // h, 0))
        if folds < config.folds:
            notes.append(f"history allows {folds} of {config.folds} backtest folds")
    backtests: dict[str, list[FoldForecast]] = {}
    errors: dict[str, float] = {}
    inits: dict[str, dict | None] = {}
    tried = [*candidates, *([models.BASELINE] if models.BASELINE not in candidates else [])]
    for name in tried if folds else []:
        runs, init = [], None
        try:
            for k in range(folds, 0, -1):
                origin = n - k * h
                fc = _fit(name, series.head(origin), h, init=init)
                init = fc.params
                expected = None if series.expected is None else series.expected[origin: origin + h]
                runs.append(FoldForecast(k, series.y[origin: origin + h], fc, expected))
        except Exception as e:  # one model failing on one series never fails the run
            if name in candidates:
                candidates.remove(name)
            notes.append(f"{name} failed: {type(e).__name__}: {str(e)[:120]}")
            continue
        backtests[name], inits[name] = runs, init
        errors[name] = sum(float(np.nansum(np.abs(r.forecast.yhat - r.actual))) for r in runs)
    if not candidates:
        candidates = [models.BASELINE]
    chosen = choose(candidates, errors)
    try:
        final = _fit(chosen, series, h, init=inits.get(chosen), keep_json=config.keep_json)
    except Exception as e:
        notes.append(f"{chosen} failed on the final fit: {type(e).__name__}: {str(e)[:120]}")
        chosen = models.BASELINE
        final = _fit(chosen, series, h)
    scale = metrics.naive_scale(series.y[: n - folds * h], series.season) if folds else float("nan")
    return SeriesResult(series.store_id, series.product_id, chosen, final, series.future_dates(h), notes=notes,
                        seconds=time.perf_counter() - started, backtests=backtests, folds=folds, scale=scale)


#: fewest backtest errors behind a calibrated interval; with fewer, the model's own intervals stay
MIN_CALIBRATION = 10


def spread(yhat: np.ndarray) -> np.ndarray:
    """The scale errors are measured in: count noise grows with the level (Poisson: sd = sqrt(mean))."""
    return np.sqrt(np.clip(yhat, 0.0, None) + 1.0)


def calibrate(results: list[SeriesResult]) -> list[SeriesResult]:
    """Conformal intervals pooled over `results` (a shard's series; the whole run locally), then the backtest
    scores and the ml.backtest_metrics rows.

    Each series' chosen model's backtest errors, divided by `spread(yhat)`, go into one pool; a forecast's
    bounds are yhat + quantiles of the pool x spread(yhat). Per series, ~84 errors cannot place a 95% bound
    (it is the second largest error), so the tails came out too narrow; pooled, the scaled errors of
    thousands of points can. The backtest's own coverage scores fold k with a pool of the other folds only
    (out of sample). Results are changed in place and returned."""
    pool: dict[int, list[np.ndarray]] = {}
    for r in results:
        for run in r.backtests.get(r.model, ()):
            keep = ~np.isnan(run.actual)
            z = (run.actual[keep] - run.forecast.yhat[keep]) / spread(run.forecast.yhat[keep])
            pool.setdefault(run.k, []).append(z)
    everything = _quantiles([z for zs in pool.values() for z in zs])
    leave_out = {k: _quantiles([z for j, zs in pool.items() if j != k for z in zs]) for k in pool}
    for r in results:
        if r.model in r.backtests and everything is not None:
            r.forecast = _with_intervals(r.forecast, everything)
        r.scores, oracle = {}, Score()
        for name, runs in r.backtests.items():
            total = Score()
            for run in runs:
                q = leave_out.get(run.k)
                fc = _with_intervals(run.forecast, q) if q is not None else run.forecast
                total = total + Score.of(run.actual, fc.yhat, fc.lo80, fc.hi80, fc.lo95, fc.hi95, r.scale)
                if name == r.model and run.expected is not None:
                    e = run.expected
                    oracle = oracle + Score.of(run.actual, e, e, e, e, e, r.scale)
            r.scores[name] = total
        r.oracle = oracle if r.model in r.backtests and r.backtests[r.model][0].expected is not None else None
        r.metrics = _metric_rows(r)
    return results


def _quantiles(errors: list[np.ndarray]) -> np.ndarray | None:
    e = np.concatenate(errors) if errors else np.empty(0)
    return conformal_quantiles(e, models.QUANTILES) if e.size >= MIN_CALIBRATION else None


def _with_intervals(fc: models.Forecast, q: np.ndarray) -> models.Forecast:
    y, s = fc.yhat, spread(fc.yhat)
    return replace(fc, lo80=y + q[1] * s, hi80=y + q[2] * s, lo95=y + q[0] * s, hi95=y + q[3] * s).clipped()


def _metric_rows(r: SeriesResult) -> list[dict]:
    note = "; ".join(r.notes) or None
    rows = []
    for name in r.scores or {r.model: Score()}:
        s = r.scores.get(name, Score())
        rows.append({"store_id": r.store_id, "product_id": r.product_id, "model": name,
                     "chosen": name == r.model, "folds": r.folds if name in r.scores else 0, "points": s.points,
                     "actual_units": s.actual if s.points else None, "wape": _num(s.wape), "mase": _num(s.mase),
                     "bias": _num(s.bias), "coverage_80": _num(s.coverage_80),
                     "coverage_95": _num(s.coverage_95), "note": note})
    return rows


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
