"""`ois bench`: the quick run writes a parseable bench.json; the measuring tools and the per-click speed-ups are
correct (no timing assertions: the machine is shared)."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from ois_lightning.tools.bench import TARGETS, grid_at_paper_size
from ois_lightning.utils.measure import PeakMemory, timed
from ois_lightning.tools.bench_report import format_table
from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.model import build_model
from ois_lightning.model.prompts import NEG, POS, click_disks

from .helpers import REPO, TINY


def _disks_every_pixel(coords, labels, size, radius):
    """The disk test on every pixel (the definition click_disks must reproduce exactly)."""
    h, w = size
    ys = torch.arange(h, dtype=coords.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=coords.dtype).view(1, 1, 1, w)
    inside = (ys - coords[..., 0, None, None]) ** 2 + (xs - coords[..., 1, None, None]) ** 2 <= radius**2
    pos = (inside & (labels == POS)[..., None, None]).any(dim=1)
    neg = (inside & (labels == NEG)[..., None, None]).any(dim=1)
    return torch.stack([pos, neg], dim=1).to(coords.dtype)


@pytest.mark.parametrize("radius", [5, 3.7, 1, 0.5])
def test_windowed_click_disks_equal_the_per_pixel_test(radius):
    g = torch.Generator().manual_seed(int(radius * 10))
    for trial in range(40):
        h, w = (int(v) for v in torch.randint(4, 50, (2,), generator=g))
        coords = torch.rand(2, 9, 2, generator=g) * torch.tensor([h + 12.0, w + 12.0]) - 6  # some off-image
        if trial % 3 == 0:
            coords = coords.round()  # integer clicks, as in evaluation
        if trial % 3 == 1:
            coords = coords.floor() + 0.99999994  # just below the next integer
        labels = torch.randint(-1, 2, (2, 9), generator=g)
        assert torch.equal(click_disks(coords, labels, (h, w), radius),
                           _disks_every_pixel(coords, labels, (h, w), radius)), trial


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64, 2**20)  # 256 MB, touched
        time.sleep(0.05)  # held while the 2 ms sampler runs: the fill may hold the GIL, and a free right after
        del x  # it could fall between two samples (seen once on an idle clean clone)
    assert mem.mb > 128


def test_timed_reports_median_per_callable():
    calls = []
    r = timed({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3,
              device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4  # alternated, warm-up included
    assert set(r) == {"a", "b"}
    slow = timed({"sleep": lambda: time.sleep(0.02)}, warmup=0, repeats=3, device=torch.device("cpu"))["sleep"]
    assert 0.02 <= slow["min_s"] < 1.0 and slow["s"] >= 0.02  # a known duration is measured, in seconds


def test_quick_bench_writes_parseable_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["quick"] and r["machine"]["torch"] == torch.__version__
    for key in ("ois_vs_dense_per_click_paper", "ois_vs_dense_per_click_paper_quarter_logits",
                "ois_quarter_vs_input_logits_per_click", "ois_vs_dense_per_click_tiny", "click20_vs_click1",
                "clicker_share_of_click", "train_click_simulation_overhead", "grid_with_cache_vs_one_row"):
        assert math.isfinite(r["ratios"][key]) and r["ratios"][key] > -1, key
    assert set(r["targets"]) == set(TARGETS) - {"train_click_simulation_overhead_vitb"}  # no ViT-B step in quick
    p, q = r["per_click"]["paper"], r["per_click"]["paper_quarter_logits"]
    assert (p["decoder_logits"], q["decoder_logits"]) == ("input", "quarter")
    assert set(r["clicks"]) >= {"click1_s", "click5_s", "click10_s", "click20_s"}
    steps = r["train_step"]["tiny"]
    assert steps["without_simulation"]["mean_rounds"] == 0 < steps["with_simulation"]["mean_rounds"] <= 3
    assert steps["expected_rounds"] == 1.5  # the paper's 0..3 simulated rounds (clicks.max_extra)
    assert r["grid"]["cached_equals_uncached"] and len(r["grid"]["rows"]) == 5
    assert r["sat"]["points"] == 16 and r["sat"]["s"] > 0
    assert set(r["grid_paper_size"]) == {"input_logits", "quarter_logits"}
    assert "ois_vs_dense_per_click_paper" in capsys.readouterr().out
    assert format_table(r).startswith("ois bench on ")
    assert not list(out.parent.glob("*.tmp"))


def test_sat_points_decoded_together_equal_one_at_a_time():
    """The SAT bench decodes a batch of single-point prompts over one shared encoding (``ImageEncoding.select``
    with repeated indices): each mask is the one that point alone gives."""
    torch.manual_seed(0)
    model = build_model(load_config(REPO / "experiments" / "tiny.yaml",
                                    [*TINY, "data.depth.source=model"]).model).eval()
    enc = model.encode(torch.rand(1, 3, 112, 112))
    coords = torch.tensor([[[10.0, 20.0]], [[60.0, 90.0]], [[100.0, 5.0]]])  # 3,1,2
    labels = torch.ones(3, 1, dtype=torch.long)
    with torch.no_grad():
        together = model(enc.select(torch.zeros(3, dtype=torch.long)), coords, labels)  # 3,1,S,S
        alone = torch.cat([model(enc, coords[i:i + 1], labels[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[1])  # the points do give different masks


def test_grid_at_paper_size_from_known_parts():
    """E = 12 s, c = 1 s: 5 rows cost (12 + 5n) / (12 + n) x one row, which is 2 at n = 4 and 3.5 at n = 20."""
    g = grid_at_paper_size(12.0, {"x": 1.0}, max_clicks=20)["x"]
    assert g["break_even_clicks_per_object"] == pytest.approx(4.0)
    assert g["ratio_at_max_clicks"] == pytest.approx(112 / 32) and g["max_clicks"] == 20
