"""The forecasting models: Prophet and the baselines, each `fit_predict(series, horizon) -> Forecast`.

    from ml import models
    fc = models.MODELS["prophet"](series, horizon=28)      # yhat and 80/95% intervals, never negative
    fc = models.MODELS["snaive"](series, horizon=28)

Models (`--models` names):
- `prophet`: Prophet with weekly seasonality (daily data), yearly seasonality once there are 1.5 years of
  history, the public holidays of the store's country (with the two days before each, when demand moves;
  Christmas and Boxing Day with their own effect, the others sharing one: see `holiday_frame`),
  and price and promotion as regressors where they vary. Future regressors: the planned values when the
  series carries them, otherwise the last price carried forward and no promotion (a promotion is a window
  of days; carrying one forward would forecast a month-long promotion). Stock-out days and gaps are left
  out of the fit: sales there are censored demand. MAP fit (no MCMC); intervals are Prophet's observation
  noise (sigma_obs) as a normal interval around yhat, computed directly instead of Prophet's 1000 simulated
  paths (which also sample trend changes; over a 28-day horizon that part is small and it dominated the cost).
- `snaive`: seasonal naive (the last season repeated; season 7 days or 52 weeks, lag 1 when shorter).
- `tsb`, `croston`, `adida`: intermittent-demand models from statsforecast (TSB, Croston SBA, ADIDA).
- `ets`: statsforecast AutoETS with the weekly season (its own intervals).
Baseline intervals (all but prophet and ets) are empirical: the forecast plus quantiles of the model's
in-sample errors over the last year (snaive: y[t] - y[t - season]; the flat intermittent models: recent
demand around its mean), so they are as skewed as the demand is. Every bound is clipped at zero.

Baselines see gaps as zero demand. statsforecast compiles with numba on first use in each process
(seconds); `warm_up()` pays that once per worker, and NIXTLA_NUMBA_CACHE keeps the result on disk.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.data import Series

Z80, Z95 = 1.2815515655446004, 1.959963984540054
QUANTILES = (0.025, 0.1, 0.9, 0.975)  # lower 95, lower 80, upper 80, upper 95
RESIDUAL_WINDOW = 365  # periods of in-sample errors behind the empirical intervals
YEARLY_MIN_DAYS = 548  # yearly seasonality from 1.5 years of history
PRE_HOLIDAY_DAYS = 2


@dataclass
class Forecast:
    """A point forecast and its 80% and 95% prediction intervals over the horizon."""

    model: str
    yhat: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    #: the fitted model as JSON (Prophet's model_to_json), for the final fit only
    model_json: str | None = None
    #: Prophet's fitted parameters, to warm-start the next fit of the same series
    params: dict | None = None

    def clipped(self) -> Forecast:
        arrays = [np.clip(np.nan_to_num(a, nan=0.0), 0.0, None) for a in
                  (self.yhat, self.lo80, self.hi80, self.lo95, self.hi95)]
        yhat, lo80, hi80, lo95, hi95 = arrays
        # bounds never cross the point forecast or each other
        lo80, lo95 = np.minimum(lo80, yhat), np.minimum(np.minimum(lo95, lo80), yhat)
        hi80, hi95 = np.maximum(hi80, yhat), np.maximum(np.maximum(hi95, hi80), yhat)
        return Forecast(self.model, yhat, lo80, hi80, lo95, hi95, self.model_json, self.params)


def _filled(series: Series) -> np.ndarray:
    return np.nan_to_num(series.y, nan=0.0)


def _empirical(model: str, yhat: np.ndarray, residuals: np.ndarray) -> Forecast:
    """yhat plus quantiles of `residuals` (the last RESIDUAL_WINDOW of them)."""
    r = residuals[-RESIDUAL_WINDOW:]
    r = r[~np.isnan(r)]
    q = np.quantile(r, QUANTILES) if r.size else np.zeros(len(QUANTILES))
    return Forecast(model, yhat, yhat + q[1], yhat + q[2], yhat + q[0], yhat + q[3])


def seasonal_naive(series: Series, horizon: int, **_) -> Forecast:
    y = _filled(series)
    if not y.size:
        zero = np.zeros(horizon)
        return Forecast("snaive", zero, zero, zero, zero, zero)
    m = series.season if len(y) >= series.season else 1
    yhat = y[len(y) - m + np.arange(horizon) % m]
    return _empirical("snaive", yhat, y[m:] - y[:-m])


# ---- statsforecast models ------------------------------------------------------------------------------
def _use_numba_cache() -> None:
    os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "numba-lakehouse"))


def _statsforecast_model(name: str, season: int):
    _use_numba_cache()
    from statsforecast import models as sf

    return {
        "tsb": lambda: sf.TSB(alpha_d=0.1, alpha_p=0.1),
        "croston": lambda: sf.CrostonSBA(),
        "adida": lambda: sf.ADIDA(),
        "ets": lambda: sf.AutoETS(season_length=season),
    }[name]()


def _flat(name: str) -> Callable[..., Forecast]:
    def fit_predict(series: Series, horizon: int, **_) -> Forecast:
        y = _filled(series)
        level = _statsforecast_model(name, series.season).forecast(y=y, h=horizon)["mean"]
        recent = y[-RESIDUAL_WINDOW:]
        return _empirical(name, np.asarray(level, float), recent - recent.mean())

    fit_predict.__name__ = name
    return fit_predict


def ets(series: Series, horizon: int, **_) -> Forecast:
    y = _filled(series)
    season = series.season if len(y) >= 2 * series.season else 1
    out = _statsforecast_model("ets", season).forecast(y=y, h=horizon, level=[80, 95])
    return Forecast("ets", out["mean"], out["lo-80"], out["hi-80"], out["lo-95"], out["hi-95"])


# ---- Prophet --------------------------------------------------------------------------------------------
def quiet_prophet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("cmdstanpy").disabled = True


#: holidays that get an effect of their own; every other public holiday shares one effect
OWN_EFFECT_HOLIDAYS = ("Christmas Day", "Boxing Day")
PUBLIC_HOLIDAY = "public holiday"


@functools.lru_cache(maxsize=32)
def holiday_frame(country: str, first_year: int, last_year: int) -> pd.DataFrame | None:
    """Public holidays of `country` as Prophet wants them (with the days before), or None if unknown.

    Each holiday happens once a year, so two years of history cannot estimate one effect per holiday
    (and every extra one costs fit time): Christmas and Boxing Day, when shops close or trade very
    differently, keep their own effect; the others share one "public holiday" effect."""
    import holidays

    try:
        days = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except (NotImplementedError, KeyError):
        return None
    if not days:
        return None
    names = [name if name in OWN_EFFECT_HOLIDAYS else PUBLIC_HOLIDAY for name in days.values()]
    frame = pd.DataFrame({"ds": pd.to_datetime(list(days.keys())), "holiday": names})
    frame["lower_window"], frame["upper_window"] = -PRE_HOLIDAY_DAYS, 0
    return frame.drop_duplicates("ds").sort_values("ds").reset_index(drop=True)


def _regressors(series: Series, horizon: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (history, future) for regressors that vary in the fitted history."""
    known = ~np.isnan(series.y) & ~series.stockout
    out = {}
    for name, history, planned, default in (
        ("price", series.price, series.future_price, series.price[-1] if len(series.price) else np.nan),
        ("promo", series.promo, series.future_promo, 0.0),
    ):
        if np.isnan(history).any() or np.nanstd(history[known]) == 0:
            continue
        future = np.full(horizon, default, float)
        if planned is not None and len(planned):
            take = min(horizon, len(planned))
            future[:take] = planned[:take]
        out[name] = (history, np.nan_to_num(future, nan=default))
    return out


def prophet(series: Series, horizon: int, init: dict | None = None, keep_json: bool = False, **_) -> Forecast:
    dates = pd.to_datetime(series.dates)
    future_dates = pd.to_datetime(series.future_dates(horizon))
    daily = series.freq == "D"
    span_days = (dates[-1] - dates[0]).days + 1
    holidays_df = holiday_frame(series.country, dates[0].year, future_dates[-1].year) if daily else None
    if holidays_df is not None:  # only holidays the history has seen: an unseen one cannot be estimated
        seen = holidays_df.loc[holidays_df["ds"].between(dates[0], dates[-1]), "holiday"].unique()
        holidays_df = holidays_df[holidays_df["holiday"].isin(seen)] if len(seen) else None
    model = lean_prophet()(
        growth="linear",
        yearly_seasonality=3 if span_days >= YEARLY_MIN_DAYS else False,
        weekly_seasonality=3 if daily and len(dates) >= 14 else False,
        daily_seasonality=False,
        holidays=holidays_df,
        seasonality_mode="multiplicative",
        uncertainty_samples=0,
    )
    y = series.y.copy()
    y[series.stockout] = np.nan  # censored by an empty shelf
    history = pd.DataFrame({"ds": dates, "y": y})
    future = pd.DataFrame({"ds": future_dates})
    for name, (past, ahead) in _regressors(series, horizon).items():
        model.add_regressor(name, mode="multiplicative")
        history[name], future[name] = past, ahead
    model.fit(history, init=init) if init else model.fit(history)
    yhat = model.yhat(future)
    sigma = float(model.params["sigma_obs"].ravel()[0]) * float(model.y_scale)
    fc = Forecast("prophet", yhat, yhat - Z80 * sigma, yhat + Z80 * sigma, yhat - Z95 * sigma, yhat + Z95 * sigma,
                  params=_warm_start(model))
    if keep_json:
        from prophet.serialize import model_to_json

        fc.model_json = model_to_json(model)
    return fc


@functools.cache
def lean_prophet() -> type:
    """Prophet with the same fit and the same point forecast, minus three costs measured on this project's
    fits (~0.25 CPU-s each, three quarters of it Python around a ~0.07 s Stan optimisation):
    - `regressor_column_matrix` (which feature column belongs to which component: a pandas crosstab, twice
      per fit) is a function of the column names and the model's settings only, so it is memoised, and so
      are the holiday and Fourier features, row by row functions of the day: computed once per span of days,
      any set of days in it (a history without its stock-out days, a fold, a horizon) takes its rows;
    - the data for Stan goes to cmdstanpy as numpy arrays, not as nested lists (stanio converts arrays to
      JSON in C but walks lists element by element in Python);
    - `yhat(future)` computes the point forecast from the fitted parameters as `predict` does (trend x
      (1 + multiplicative terms) + additive terms) without building every component's columns.
    The class is a plain subclass: `model_to_json` saves it as a Prophet model."""
    from prophet import Prophet

    quiet_prophet()  # after the import: prophet sets its logger's level when imported

    class LeanProphet(Prophet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.stan_backend.prepare_data = _stan_arrays  # this instance's backend only

        def regressor_column_matrix(self, seasonal_features, modes):
            key = (tuple(seasonal_features.columns), tuple((m, tuple(v)) for m, v in sorted(modes.items())),
                   None if self.train_holiday_names is None else tuple(self.train_holiday_names),
                   tuple((name, props["mode"]) for name, props in self.extra_regressors.items()),
                   self.holidays_mode,
                   None if self.train_component_cols is None else tuple(self.train_component_cols.columns))
            hit = _COMPONENT_COLS.get(key)
            if hit is None:
                cols, new_modes = super().regressor_column_matrix(seasonal_features, {m: list(v) for m, v in
                                                                                      modes.items()})
                hit = _COMPONENT_COLS[key] = (cols, new_modes)
            cols, new_modes = hit
            return cols.copy(), {m: list(v) for m, v in new_modes.items()}

        def make_holiday_features(self, dates, holidays):
            span = _day_span(dates)
            if span is None:
                return super().make_holiday_features(dates, holidays)
            first, last, rows = span
            key = ("holidays", first, last, tuple(holidays.columns),
                   pd.util.hash_pandas_object(holidays, index=False).to_numpy().tobytes(), self.holidays_prior_scale)
            features, priors, names = _cached(key, lambda: super(LeanProphet, self).make_holiday_features(
                pd.Series(pd.date_range(str(first), str(last), freq="D")), holidays))
            if self.train_holiday_names is None:  # as Prophet's own: the holidays seen in the fit
                self.train_holiday_names = pd.Series(names)
            return features.iloc[rows].reset_index(drop=True), list(priors), list(names)

        @classmethod
        def make_seasonality_features(cls, dates, period, series_order, prefix):
            span = _day_span(dates)
            if span is None:
                return super().make_seasonality_features(dates, period, series_order, prefix)
            first, last, rows = span
            features = _cached(("fourier", first, last, period, series_order, prefix),
                               lambda: super(LeanProphet, cls).make_seasonality_features(
                                   pd.Series(pd.date_range(str(first), str(last), freq="D")), period, series_order,
                                   prefix))
            return features.iloc[rows].reset_index(drop=True)

        def yhat(self, future: pd.DataFrame) -> np.ndarray:
            df, _ = self._prepare_regressors_for_predict(future.copy(), None)
            df = self.setup_dataframe(df)
            trend = self.predict_trend(df).to_numpy(float)
            features, _, cols, _ = self.make_all_seasonality_features(df)
            x, beta = features.to_numpy(float), np.asarray(self.params["beta"], float)
            multiplicative = np.nanmean(x @ (beta * cols["multiplicative_terms"].to_numpy()).T, axis=1)
            additive = np.nanmean(x @ (beta * cols["additive_terms"].to_numpy()).T, axis=1) * self.y_scale
            return trend * (1 + multiplicative) + additive

    return LeanProphet


#: regressor_column_matrix results by (columns, modes, holidays, regressors, training columns)
_COMPONENT_COLS: dict[tuple, tuple] = {}
#: holiday and Fourier features of every day of a span: series on one calendar share them (and their folds')
_FEATURES: dict[tuple, object] = {}
CACHE_SIZE = 256


def _day_span(dates: pd.Series) -> tuple[np.datetime64, np.datetime64, np.ndarray] | None:
    """(first day, last day, each date's row in the span) when every date is a whole day, else None."""
    values = dates.to_numpy()
    days = values.astype("datetime64[D]")
    if not len(days) or dates.dt.tz is not None or not np.array_equal(days.astype(values.dtype), values):
        return None
    first = days.min()
    return first, days.max(), (days - first).astype(int)


def _cached(key: tuple, compute):
    hit = _FEATURES.get(key)
    if hit is None:
        if len(_FEATURES) >= CACHE_SIZE:
            _FEATURES.clear()
        hit = _FEATURES[key] = compute()
    return hit


def _stan_arrays(init: dict, data: dict) -> tuple[dict, dict]:
    """Prophet's CmdStanPyBackend.prepare_data with numpy arrays instead of lists (same JSON for Stan)."""
    keep = ("T", "S", "K", "tau", "trend_indicator", "sigmas")
    stan_data = {k: data[k] for k in keep}
    for k in ("y", "t", "cap", "t_change", "s_a", "s_m"):
        stan_data[k] = np.asarray(data[k], float if k not in ("s_a", "s_m") else None)
    stan_data["X"] = np.asarray(data["X"].to_numpy(), float)
    stan_init = {"k": init["k"], "m": init["m"], "delta": np.asarray(init["delta"], float),
                 "beta": np.asarray(init["beta"], float), "sigma_obs": init["sigma_obs"]}
    return stan_init, stan_data


def _warm_start(model) -> dict:
    """Fitted parameters in the shape Prophet's `fit(init=...)` takes."""
    p = model.params
    return {"k": float(p["k"].ravel()[0]), "m": float(p["m"].ravel()[0]),
            "sigma_obs": float(p["sigma_obs"].ravel()[0]),
            "delta": np.asarray(p["delta"][0], float), "beta": np.asarray(p["beta"][0], float)}


#: every model by name, simplest first (a backtest tie goes to the simpler model)
MODELS: dict[str, Callable[..., Forecast]] = {
    "snaive": seasonal_naive,
    "tsb": _flat("tsb"),
    "croston": _flat("croston"),
    "adida": _flat("adida"),
    "ets": ets,
    "prophet": prophet,
}
BASELINE = "snaive"
DEFAULT_MODELS = ("prophet", "snaive", "tsb")


def warm_up(names) -> None:
    """Pay one-off costs (numba compilation, Stan model load) before timing-sensitive work."""
    y = np.r_[np.zeros(20), np.arange(20.0)] % 3
    dates = np.datetime64("2024-01-01") + np.arange(len(y)).astype("timedelta64[D]")
    s = Series("warm", "up", "D", dates, y, np.ones(len(y)), np.zeros(len(y)), np.zeros(len(y), bool))
    for name in names:
        if name == "prophet":
            import cmdstanpy  # noqa: F401  (fixes its temp directory now; `import prophet` does not import it)

            lean_prophet()
        else:
            MODELS[name](s, 7)


#: modules a pool of forecasting processes can import once, before forking (the forkserver's preload): none
#: imports cmdstanpy, whose temp directory must be each process's own
WORKER_PRELOAD = ("numpy", "pandas", "holidays", "prophet", "statsforecast.models", "ml.models")


def start_worker(model_names: tuple[str, ...]) -> None:
    """Prepare a pool process to fit series: its own temp directory first (parallel cmdstanpy runs sharing one
    hang or corrupt each other's output, and cmdstanpy picks its directory when first imported), then quiet
    logs and the one-off compilation paid up front. The directory goes when the process exits (a
    multiprocessing finalizer: pool processes end with os._exit, which skips atexit handlers)."""
    import shutil
    import tempfile
    from multiprocessing import util

    tmp = tempfile.mkdtemp(prefix=f"lakehouse-forecast-{os.getpid()}-")
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = tmp
    util.Finalize(None, shutil.rmtree, args=(tmp, True), exitpriority=0)
    _use_numba_cache()
    warm_up(model_names)
    quiet_prophet()
