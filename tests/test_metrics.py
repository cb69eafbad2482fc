"""NoC / NoF / k-mIoU / SPC on hand-made IoU curves."""
from __future__ import annotations

import numpy as np
import pytest

from ois_lightning.protocol.metrics import miou_curve, noc_determined, noc_per_object, summarize_ious, summarize_timing


def ramp(first_hit: int, level: float, n: int = 20, low: float = 0.5) -> list[float]:
    """IoU curve at ``low`` until click ``first_hit`` (1-based), ``level`` from then on."""
    return [low] * (first_hit - 1) + [level] * (n - first_hit + 1)


def test_noc_at_click_one_and_never_reached():
    curves = [ramp(1, 0.96), [0.5] * 20, ramp(3, 0.91)]
    assert noc_per_object(curves, 0.90, 20).tolist() == [1, 20, 3]
    assert noc_per_object(curves, 0.95, 20).tolist() == [1, 20, 20]


def test_noc_only_counts_first_max_clicks_and_short_curves():
    assert noc_per_object([ramp(21, 0.99, n=25)], 0.9, 20).tolist() == [20]  # reached after click 20: ignored
    assert noc_per_object([[0.3, 0.92]], 0.9, 20).tolist() == [2]  # early-stopped curve
    assert noc_per_object([[0.3, 0.5]], 0.9, 20).tolist() == [20]


def test_summary_noc_nof():
    curves = [ramp(1, 0.97), [0.5] * 20, ramp(20, 0.99), ramp(4, 0.92)]
    s = summarize_ious(curves)
    assert s["num_objects"] == 4
    assert s["NoC90"] == pytest.approx((1 + 20 + 20 + 4) / 4)
    assert s["NoC90_std"] == pytest.approx(np.std([1, 20, 20, 4]))
    assert s["NoF90"] == 2  # never reached, and reached exactly at click 20, are both failures
    assert s["NoC95"] == pytest.approx((1 + 20 + 20 + 20) / 4) and s["NoF95"] == 3
    assert s["NoC85"] == s["NoC90"] and s["NoF85"] == 2
    assert isinstance(s["NoF85"], int)


def test_miou_at_k_in_percent():
    curves = [[0.6, 0.7, 0.8, 0.85, 0.9] + [0.9] * 15, [0.4, 0.5, 0.6, 0.7, 0.8] + [0.95] * 15]
    s = summarize_ious(curves)
    assert s["1-mIoU"] == pytest.approx(50.0)
    assert s["5-mIoU"] == pytest.approx(85.0)
    np.testing.assert_allclose(miou_curve(curves, 20)[:6], [0.5, 0.6, 0.7, 0.775, 0.85, 0.925])
    assert miou_curve(curves, 20).shape == (20,)


def test_custom_thresholds_and_miou_points():
    s = summarize_ious([[0.7, 0.8, 0.9]], max_clicks=3, thresholds=(0.8,), miou_at=(2, 3))
    assert s == {"num_objects": 1, "clicks_per_object": 3.0, "NoC80": 2.0, "NoC80_std": 0.0, "NoF80": 0,
                 "2-mIoU": pytest.approx(80.0), "3-mIoU": pytest.approx(90.0)}


def test_early_stopped_curves_leave_undetermined_metrics_open():
    curves = [[0.9] * 20, [0.9, 0.95, 0.97]]  # object 1 stopped early after 3 clicks (target 0.95)
    s = summarize_ious(curves)
    assert s["5-mIoU"] is None and s["1-mIoU"] == pytest.approx(90.0)  # no IoU after click 5 for object 1
    assert s["NoC90"] == pytest.approx((1 + 1) / 2) and s["NoC95"] == pytest.approx((20 + 2) / 2)
    assert s["NoF95"] == 1 and s["clicks_per_object"] == pytest.approx(11.5)
    assert summarize_ious(curves, miou_at=(1, 3))["3-mIoU"] == pytest.approx(93.5)
    stopped_low = [[0.9] * 20, [0.5, 0.86]]  # stopped at target 0.85: NoC90 and NoC95 of object 1 unknown
    s = summarize_ious(stopped_low, miou_at=(1, 2))
    assert s["NoC85"] == pytest.approx(1.5) and s["NoF85"] == 0
    assert s["NoC90"] is None and s["NoC90_std"] is None and s["NoF90"] is None and s["NoC95"] is None
    assert noc_determined(stopped_low, 0.86) and not noc_determined(stopped_low, 0.87)
    with pytest.raises(ValueError, match=r"object 1 has 3"):
        miou_curve(curves, 20)
    with pytest.raises(ValueError):
        summarize_ious([])


def test_spc_and_timing_split_from_known_timings():
    t = summarize_timing(total_seconds=30.0, encoder_seconds=6.0, click_seconds=12.0, num_clicks=60, num_images=3)
    assert t == {"SPC": pytest.approx(0.5), "encoder_s_per_image": pytest.approx(2.0),
                 "click_s_per_click": pytest.approx(0.2)}
    with pytest.raises(ValueError, match="num_clicks=0"):
        summarize_timing(1.0, 0.5, 0.5, 0, 1)
