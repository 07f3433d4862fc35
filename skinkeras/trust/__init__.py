"""Trust beyond the heatmap: calibration, referral (selective prediction) and subgroup audits, on arrays.

Functions of labels, probabilities and record columns only: no model, no files. The stages
(`skinkeras.classification.calibrate`, `cls-eval`, `predict`) call them; `skinkeras.report` draws them.
"""

from skinkeras.trust.calibration import (
    ECE_BINS,
    calibration_errors,
    calibration_intervals,
    fit_temperature,
    reliability_bins,
    scale_temperature,
)
from skinkeras.trust.referral import aurc, operating_point, risk_coverage, threshold_for_accuracy, view_spread
from skinkeras.trust.subgroups import subgroup_labels, subgroup_table

__all__ = [
    "ECE_BINS",
    "aurc",
    "calibration_errors",
    "calibration_intervals",
    "fit_temperature",
    "operating_point",
    "reliability_bins",
    "risk_coverage",
    "scale_temperature",
    "subgroup_labels",
    "subgroup_table",
    "threshold_for_accuracy",
    "view_spread",
]
