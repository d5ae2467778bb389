import numpy as np
import pytest
from scipy.special import expit, logit

from training.calibration import Calibrator, calibrate, expected_calibration_error, fit_calibrator


def test_ece_is_the_weighted_gap_between_predicted_and_observed_rates():
    labels = np.array([0, 0, 1, 1, 0, 1])
    probabilities = np.array([0.1, 0.1, 0.9, 0.9, 0.5, 0.5])
    # equal-count bins of two: (0.1, 0.1) observed 0, (0.5, 0.5) observed 0.5, (0.9, 0.9) observed 1
    assert expected_calibration_error(labels, probabilities, bins=3) == pytest.approx((0.1 + 0.0 + 0.1) / 3)


def test_platt_calibration_fixes_overconfident_scores_and_keeps_their_order():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.001, 0.3, 40_000)
    labels = (rng.random(truth.size) < truth).astype(int)
    raw = expit(1.3 * logit(truth) + 1.5)  # overconfident: 0.09 -> 0.18
    fit, held = slice(0, 20_000), slice(20_000, None)
    calibrator = fit_calibrator(raw[fit], labels[fit])
    calibrated = calibrate(calibrator, raw[held])
    assert expected_calibration_error(labels[held], raw[held]) > 0.1
    assert expected_calibration_error(labels[held], calibrated) < 0.01
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(raw[held], kind="stable"))
    restored = Calibrator.from_dict(calibrator.to_dict())
    assert np.array_equal(calibrate(restored, raw[held]), calibrated)


def test_scores_that_do_not_rank_the_labels_are_refused():
    scores = np.array([0.9, 0.8, 0.2, 0.1] * 50)
    with pytest.raises(ValueError, match="slope"):
        fit_calibrator(scores, np.array([0, 0, 1, 1] * 50))


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([0, 0]))


def test_isotonic_calibrators_of_earlier_versions_still_load():
    centred = Calibrator.from_dict({"method": "isotonic_centred", "tie_break": 1e-6, "x": [0.1, 0.3], "y": [0.0, 0.4]})
    assert calibrate(centred, np.array([0.2])) == pytest.approx([0.2], abs=1e-5)
    assert Calibrator.from_dict(centred.to_dict()) == centred
    steps = Calibrator.from_dict({"method": "isotonic", "x": [0.1, 0.2, 0.2, 0.4], "y": [0.0, 0.0, 0.5, 0.5]})
    assert calibrate(steps, np.array([0.15, 0.3])) == pytest.approx([0.0, 0.5], abs=1e-5)
    assert Calibrator.from_dict(steps.to_dict()) == steps
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibrator.from_dict({"method": "platt", "x": [], "y": []})
