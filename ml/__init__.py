"""Demand forecasting (Prophet and baselines per store and product): arrives with the forecasting issue.

Imports run one way: `ml` may import `pipelines`; `pipelines` never imports `ml`.
"""
