"""Forecast metrics on hand-computed cases, including the undefined ones (no actuals, zero demand)."""

import math

import numpy as np
import pytest

from ml import metrics
from ml.metrics import Score

ACTUAL = [1, 2, 3, 0]
FORECAST = [2, 2, 1, 1]  # errors +1, 0, -2, +1: |e| sums to 4, e sums to 0; actuals sum to 6


def test_wape_and_bias_by_hand():
    assert metrics.wape(ACTUAL, FORECAST) == pytest.approx(4 / 6)
    assert metrics.bias(ACTUAL, FORECAST) == 0.0
    assert metrics.bias([2, 2], [3, 3]) == pytest.approx(0.5)


def test_mase_scales_by_in_sample_seasonal_naive():
    history = [1, 3, 2, 4, 3]
    # lag 1: |2|, |1|, |2|, |1| -> 1.5; MAE of the forecast is 4 / 4 = 1
    assert metrics.mase(ACTUAL, FORECAST, history, season=1) == pytest.approx(1 / 1.5)
    # lag 2: |1|, |1|, |1| -> 1
    assert metrics.mase(ACTUAL, FORECAST, history, season=2) == pytest.approx(1.0)
    # a season longer than the history falls back to lag 1
    assert metrics.mase(ACTUAL, FORECAST, history, season=7) == pytest.approx(1 / 1.5)


def test_coverage_counts_closed_interval():
    assert metrics.coverage(ACTUAL, [0, 2, 4, 0], [1, 2, 5, 1]) == 0.75


def test_nan_actuals_are_ignored():
    assert metrics.wape([1, np.nan, 3], [2, 100, 3]) == pytest.approx(1 / 4)
    assert metrics.coverage([np.nan, 1], [0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize("fn", [metrics.wape, metrics.bias])
def test_undefined_without_demand(fn):
    assert math.isnan(fn([0, 0, 0], [1, 1, 1]))
    assert math.isnan(fn([], []))


def test_mase_undefined_for_constant_history():
    assert math.isnan(metrics.mase([1, 2], [1, 1], [5, 5, 5, 5], season=1))


def test_scores_pool_exactly():
    a1, f1, a2, f2 = [1, 2, 3], [1, 1, 1], [0, 5], [2, 5]
    pooled = Score.of(a1, f1, f1, f1, f1, f1) + Score.of(a2, f2, f2, f2, f2, f2)
    assert pooled.wape == pytest.approx(metrics.wape(a1 + a2, f1 + f2))
    assert pooled.bias == pytest.approx(metrics.bias(a1 + a2, f1 + f2))
    assert pooled.points == 5
    # the interval is the point forecast: only exact hits are inside (1, 0->2 no, 5)
    assert pooled.coverage_80 == pytest.approx(2 / 5)


def test_score_mase_matches_function():
    a, f, history = [3, 1, 4], [2, 2, 2], [1, 5, 2, 6, 3, 7]
    scale = metrics.naive_scale(history, 2)
    assert Score.of(a, f, f, f, f, f, scale).mase == pytest.approx(metrics.mase(a, f, history, 2))
    assert math.isnan(Score().wape) and math.isnan(Score().coverage_95)
