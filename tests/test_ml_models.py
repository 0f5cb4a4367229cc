"""Models and the per-series backtest on small fixed series: exact baselines, clipping, bad series, failures."""

import numpy as np
import pandas as pd
import pytest
from demand_fixture import hand_series

from ml import data, models
from ml.backtest import Config, FoldForecast, SeriesResult, calibrate, conformal_quantiles, diagnose, forecast_series

WEEK = [5, 6, 7, 8, 9, 20, 1]


def test_seasonal_naive_repeats_last_season():
    s = hand_series(np.arange(1, 15))
    fc = models.seasonal_naive(s, 10)
    assert fc.yhat.tolist() == [8, 9, 10, 11, 12, 13, 14, 8, 9, 10]
    # every in-sample seasonal error is +7: the interval is yhat + 7 on both sides, clipped around yhat
    fc = fc.clipped()
    assert np.all(fc.lo95 <= fc.lo80) and np.all(fc.lo80 <= fc.yhat) and np.all(fc.yhat <= fc.hi80)
    assert np.allclose(fc.hi95, fc.yhat + 7)


def test_seasonal_naive_shorter_than_a_season_is_naive():
    fc = models.seasonal_naive(hand_series([3, 4]), 3)
    assert fc.yhat.tolist() == [4, 4, 4]


def test_clipped_never_negative_and_ordered():
    neg = np.array([-2.0, 1.0, np.nan])
    fc = models.Forecast("x", neg, neg - 1, neg + 1, neg - 2, neg + 2).clipped()
    for a in (fc.yhat, fc.lo80, fc.hi80, fc.lo95, fc.hi95):
        assert np.all(a >= 0) and not np.isnan(a).any()
    assert np.all(fc.lo95 <= fc.lo80) and np.all(fc.hi80 <= fc.hi95)


def test_conformal_quantiles_rank_correction():
    errors = np.arange(-10, 11, dtype=float)  # 21 errors, -10..10
    # n = 21: upper 80% bound is the ceil(22 * 0.9) = 20th smallest error (9), upper 95% the 21st (10);
    # lower 80% the floor(22 * 0.1) = 2nd smallest (-9), lower 95% the 1st (-10)
    assert conformal_quantiles(errors, models.QUANTILES).tolist() == [-10, -9, 9, 10]


def _backtested(key: str, z: np.ndarray, final_yhat: float, ks=(2, 1)) -> SeriesResult:
    """A result whose chosen model forecast 3 (spread 2) in every fold, with scaled errors `z` split over folds."""
    runs = []
    for k, part in zip(ks, np.array_split(z, len(ks))):
        fc = models.Forecast("tsb", *(np.full(len(part), 3.0),) * 5)
        runs.append(FoldForecast(k, 3.0 + 2.0 * part, fc))
    final = models.Forecast("tsb", *(np.full(4, final_yhat),) * 5)
    return SeriesResult("S1", key, "tsb", final, np.arange(4), backtests={"tsb": runs}, folds=len(ks), scale=1.0)


def test_intervals_pool_scaled_backtest_errors_over_series():
    z = np.arange(-10, 11, dtype=float)
    a, b = calibrate([_backtested("P1", z[:10], 8.0), _backtested("P2", z[10:], 0.0)])
    # pooled scaled errors -10..10 (as above): bounds = yhat + [-10, -9, 9, 10] x sqrt(yhat + 1)
    assert a.forecast.hi80 == pytest.approx(np.full(4, 8 + 9 * 3.0))
    assert a.forecast.hi95 == pytest.approx(np.full(4, 8 + 10 * 3.0))
    assert a.forecast.lo80.tolist() == [0.0] * 4  # clipped at zero
    assert b.forecast.hi95 == pytest.approx(np.full(4, 10.0)) and b.forecast.yhat.tolist() == [0.0] * 4
    # backtest scores: every fold scored, with intervals from the other fold's errors only
    assert a.scores["tsb"].points == 10 and b.scores["tsb"].points == 11
    assert [m["chosen"] for m in a.metrics] == [True] and a.metrics[0]["folds"] == 2


def test_too_few_errors_keep_the_models_own_intervals():
    (r,) = calibrate([_backtested("P1", np.arange(5.0), 8.0)])
    assert r.forecast.hi95.tolist() == [8.0] * 4  # 5 errors < MIN_CALIBRATION: the model's own bounds


def test_exact_weekly_pattern_chooses_seasonal_naive():
    s = hand_series(WEEK * 20)
    r = forecast_series(s, Config(horizon=14, folds=3, models=("snaive", "tsb")))
    assert r.model == "snaive"
    assert r.scores["snaive"].abs_error == 0 and r.scores["snaive"].points == 42
    assert r.forecast.yhat.tolist() == WEEK * 2
    chosen = [m for m in r.metrics if m["chosen"]]
    assert len(chosen) == 1 and chosen[0]["wape"] == 0.0 and chosen[0]["folds"] == 3


def test_forecast_starts_after_last_period():
    s = hand_series(WEEK * 6, start="2024-03-04")
    r = forecast_series(s, Config(horizon=5, folds=1, models=("snaive",)))
    assert r.forecast_dates[0] == np.datetime64("2024-03-04") + 42
    assert len(r.forecast_dates) == 5 == len(r.forecast.yhat)


@pytest.mark.parametrize("y, note", [
    ([0.0] * 60, "all zeros"),
    ([4.0] * 60, "constant (4)"),
    ([1.0, 2.0, 3.0], "too short (3 periods with data)"),
    ([np.nan] * 40 + [1.0] * 10, "too short (10 periods with data)"),
])
def test_bad_series_get_the_baseline_with_a_reason(y, note):
    r = forecast_series(hand_series(y), Config(horizon=7, folds=3, models=("prophet", "tsb")))
    assert r.model == "snaive"
    assert any(note in n for n in r.notes)
    assert r.metrics[0]["note"] and note in r.metrics[0]["note"]
    assert np.all(r.forecast.yhat >= 0) and len(r.forecast.yhat) == 7


def test_all_zero_series_forecasts_zero():
    r = forecast_series(hand_series([0.0] * 60), Config(horizon=7, folds=2))
    assert r.forecast.yhat.tolist() == [0.0] * 7 and r.forecast.hi95.tolist() == [0.0] * 7


def test_negative_values_and_gaps_are_cleaned_and_flagged():
    y = np.array(WEEK * 10, float)
    y[3], y[10] = -5, np.nan
    s = hand_series(y, issues=["1 missing period(s)"])
    cleaned, _, notes, backtest = diagnose(s, ("snaive",))
    assert backtest and cleaned.y[3] == 0 and "1 negative value(s) set to 0" in notes
    r = forecast_series(s, Config(horizon=7, folds=2, models=("snaive", "tsb")))
    assert "1 missing period(s)" in r.notes and np.all(r.forecast.lo95 >= 0)


def test_slow_mover_skips_prophet():
    y = np.zeros(120)
    y[::9] = 1  # a sale every ninth day: ADI 9
    r = forecast_series(hand_series(y), Config(horizon=14, folds=2, models=("prophet", "tsb")))
    assert "prophet" not in r.scores and r.model == "tsb"
    assert any("slow mover" in n for n in r.notes)
    assert "snaive" in r.scores  # the reference is always scored, never chosen unless asked for


def test_failing_model_never_fails_the_series(monkeypatch):
    def broken(series, horizon, **_):
        raise RuntimeError("boom")

    monkeypatch.setitem(models.MODELS, "tsb", broken)
    r = forecast_series(hand_series(WEEK * 10 + [3, 1]), Config(horizon=7, folds=2, models=("tsb", "snaive")))
    assert r.model == "snaive"
    assert any("tsb failed: RuntimeError: boom" in n for n in r.notes)


def test_fewer_folds_than_asked_are_noted():
    r = forecast_series(hand_series(WEEK * 6), Config(horizon=7, folds=5, models=("snaive",)))
    assert any("history allows 2 of 5 backtest folds" in n for n in r.notes)


def test_to_series_lays_every_series_on_one_calendar():
    frame = pd.DataFrame({
        "demand_date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-04", "2024-01-01"]).date,
        "store_id": ["S1", "S1", "S1", "S2"], "product_id": ["P1", "P1", "P1", "P1"],
        "units_ordered": [1.0, 2.0, 3.0, 9.0], "avg_unit_price": [2.0, None, 3.0, 1.0],
        "on_promo": [False, True, False, False], "stockout": [False, False, True, False],
    })
    s1, s2 = data.to_series(frame, "D", {"S2": "US"})
    assert len(s1.dates) == len(s2.dates) == 4
    assert np.isnan(s1.y[2]) and s1.issues == ["1 missing period(s)"]
    assert s1.price.tolist() == [2.0, 2.0, 2.0, 3.0]  # carried forward over the zero-demand and missing days
    assert s1.country == "GB" and s2.country == "US"
    assert s2.y.tolist()[0] == 9 and s2.issues == ["3 missing period(s)"]


def test_weekly_series_keep_whole_weeks_labelled_by_monday():
    days = pd.date_range("2024-01-03", "2024-01-31")  # Wednesday .. Wednesday
    frame = pd.DataFrame({"demand_date": days.date, "store_id": "S1", "product_id": "P1",
                          "units_ordered": 1.0})
    (s,) = data.to_series(frame, "W")
    assert [str(d) for d in s.dates] == ["2024-01-08", "2024-01-15", "2024-01-22"]
    assert s.y.tolist() == [7.0, 7.0, 7.0]
    assert str(s.future_dates(2)[0]) == "2024-01-29"


def test_bad_frequency_and_columns_are_refused():
    with pytest.raises(ValueError, match="freq"):
        data.to_series(pd.DataFrame(), "M")
    with pytest.raises(ValueError, match="units_ordered"):
        data.to_series(pd.DataFrame({"demand_date": [], "store_id": [], "product_id": []}), "D")


@pytest.mark.slow
def test_prophet_fits_with_holidays_regressors_and_round_trips_as_json():
    from prophet.serialize import model_from_json

    rng = np.random.default_rng(0)
    n = 140
    promo = np.zeros(n)
    promo[40:47] = promo[100:105] = 1
    y = rng.poisson(np.tile(WEEK, n // 7 + 1)[:n] * (1 + promo))
    s = hand_series(y.astype(float), start="2024-01-01")
    s.promo, s.price = promo, np.where(promo > 0, 0.8, 1.0)
    r = forecast_series(s, Config(horizon=14, folds=2, models=("prophet",)))
    assert r.model == "prophet" and "prophet" in r.scores
    assert np.all(r.forecast.lo95 <= r.forecast.yhat) and np.all(r.forecast.yhat <= r.forecast.hi95)
    model = model_from_json(r.forecast.model_json)
    assert set(model.extra_regressors) == {"price", "promo"}
    names = set(model.train_holiday_names)
    assert names == {"public holiday"}  # Jan-May: no Christmas or Boxing Day in the history


def test_backtest_knows_the_plan_only_when_the_run_has_one():
    s = hand_series(WEEK * 4)
    s.promo = np.r_[np.zeros(21), np.ones(7)]
    assert s.head(21).future_promo is None  # no plan: carried forward, as in the final forecast
    s.future_promo, s.future_price = np.zeros(7), np.ones(7)
    assert s.head(21).future_promo.tolist() == [1.0] * 7


def test_closed_days_are_not_slow_demand():
    y = np.tile([3.0, 4, 5, 2, 6, 0, 0], 10)  # sells every day the store is open; closed at weekends
    s = hand_series(y)
    assert any("slow mover" in n for n in diagnose(s, ("prophet", "tsb"))[2])
    s.store_open = y > 0
    _, candidates, notes, _ = diagnose(s, ("prophet", "tsb"))
    assert "prophet" in candidates and not any("slow mover" in n for n in notes)


def test_to_series_marks_the_days_a_store_traded():
    frame = pd.DataFrame({"demand_date": pd.to_datetime(["2024-01-01", "2024-01-02"] * 2).date,
                          "store_id": "S1", "product_id": ["P1", "P1", "P2", "P2"],
                          "units_ordered": [0.0, 0.0, 2.0, 0.0]})
    p1, p2 = data.to_series(frame, "D")
    assert p1.store_open.tolist() == p2.store_open.tolist() == [True, False]


@pytest.mark.slow
def test_lean_prophet_fits_and_forecasts_exactly_as_prophet():
    """The project's Prophet (memoised component matrix, numpy data for Stan, yhat from the parameters) gives
    the same parameters and the same yhat as plain Prophet's fit and predict on the same inputs."""
    from prophet import Prophet

    rng = np.random.default_rng(1)
    n = 120
    ds = pd.date_range("2024-11-01", periods=n + 7)
    promo = (np.arange(n + 7) % 17 < 3).astype(float)
    history = pd.DataFrame({"ds": ds[:n], "y": rng.poisson(5 * (1 + promo[:n])).astype(float), "promo": promo[:n]})
    history.loc[[30, 54, 55], "y"] = np.nan  # days left out of the fit (stock-outs): the holiday rows must match
    future = pd.DataFrame({"ds": ds[n:], "promo": promo[n:]})
    fitted = []
    for cls in (Prophet, models.lean_prophet()):
        m = cls(weekly_seasonality=3, yearly_seasonality=2, holidays=models.holiday_frame("GB", 2024, 2025),
                seasonality_mode="multiplicative", uncertainty_samples=0)
        m.add_regressor("promo", mode="multiplicative")
        fitted.append(m.fit(history.copy()))
    plain, lean = fitted
    for name in ("k", "m", "sigma_obs", "delta", "beta"):
        assert np.array_equal(plain.params[name], lean.params[name]), name
    assert np.array_equal(lean.yhat(future), plain.predict(future)["yhat"].to_numpy())
