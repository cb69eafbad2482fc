"""`ois figure` (Figs. 1/4/5 strip, Fig. 3 order maps, Fig. 6 attention) and the `ois table` curve plot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.data.splits import build_split
from ois_lightning.checkpoint import load_checkpoint
from ois_lightning.tools.figures import (ATTENTION_CMAP, DEPTH_CMAP, ORDER_CMAP, attention_figure, normalised,
                                         order_figure, parse_object_id, probe_clicks, row_label, strip_figure)
from ois_lightning.utils.plots import FONT
from ois_lightning.grids.table import plot_table_curves
from ois_lightning.model.introspection import order_attention_weights
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.model import build_model
from ois_lightning.model.order import order_maps
from ois_lightning.protocol.predictor import predictor_for
from ois_lightning.grids.table import build_table, make_table
from ois_lightning.protocol.results import collect

from .helpers import REPO, TINY, save_checkpoint


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")
SCENES = TINY + ["data.layered.size=112", "data.layered.test_length=2", "clicks.max_eval=5"]
PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF-"


def check_written(png: Path) -> None:
    """A PNG of at least 200 dpi and, beside it, the same figure as vector PDF (text as fonts, not pixels)."""
    from PIL import Image

    assert png.read_bytes()[:8] == PNG
    with Image.open(png) as image:
        assert round(image.info["dpi"][0]) >= 200
    pdf = png.with_suffix(".pdf").read_bytes()
    assert pdf[:5] == PDF and b"/Font" in pdf


def check_readable(fig) -> None:
    """Every piece of text drawn (titles, ticks, labels, legends, colour bars) is at least 9 pt."""
    from matplotlib.text import Text

    texts = [t for t in fig.findobj(Text) if t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= FONT >= 9


def colour_bars(fig) -> list[str]:
    """The labels of the figure's colour bars (their axes carry one)."""
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> tuple[Path, Path]:
    """Full OIS and "w/o order" on layered scenes (depth from the scenes' ground truth)."""
    tmp = tmp_path_factory.mktemp("figures")
    return (save_checkpoint(tmp / "full.ckpt", *SCENES, "row=full", config=TINY_YAML),
            save_checkpoint(tmp / "wo_order.ckpt", *SCENES, "row=wo_order", "model.order.enabled=false",
                            config=TINY_YAML))


def _tiny_round():
    torch.manual_seed(0)
    model = build_model(load_config(None, TINY).model).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        enc = model.encode(torch.rand(1, 3, 112, 112, generator=g))
    coords = torch.tensor([[[30.0, 40.0], [90.0, 80.0], [60.0, 10.0]]])
    labels = torch.tensor([[1, 0, 1]])
    return model, enc, coords, labels


def test_attention_after_the_order_bias_differs_by_exactly_the_bias():
    """log softmax(QK^T/sqrt d - sigma M) - log softmax(QK^T/sqrt d) = -sigma M + a constant per row (Eq. 3)."""
    model, enc, coords, labels = _tiny_round()
    for block in (0, 2):
        before, after = order_attention_weights(model, enc, coords, labels, None, block)  # 1,h,N,L
        assert before.shape == (1, 4, 48, 64) and torch.allclose(after.sum(-1), torch.ones(1, 4, 48))
        slot_coords, slot_labels = model.sparse.slots(coords, labels)
        order = order_maps(enc.depth, slot_coords, slot_labels, model.order_mode, (8, 8)).flatten(2)  # 1,N,L
        sigma = model.fusion.blocks[block].order_attn.sigma
        diff = after.log() - before.log() + sigma * order[:, None]  # 1,h,N,L
        assert torch.allclose(diff - diff.mean(-1, keepdim=True), torch.zeros_like(diff), atol=1e-4)
        assert order[0, 0].abs().max() > 0.1 and not torch.allclose(before[:, :, 0], after[:, :, 0], atol=1e-3)
        assert torch.allclose(before[:, :, 47], after[:, :, 47])  # an empty slot has no order bias


def test_weights_before_the_bias_are_plain_softmax_of_the_captured_tokens():
    """The weights come from the tokens block 0's order attention really gets (object attention runs first)."""
    model, enc, coords, labels = _tiny_round()
    before, _ = order_attention_weights(model, enc, coords, labels, None, 0)
    fusion, attn = model.fusion, model.fusion.blocks[0].order_attn.attn
    with torch.no_grad():
        tokens = model.sparse(coords, labels, enc.size)[0]  # 1,N,C
        feat = enc.feats[-1] + model.dense(coords, labels, enc.size)  # 1,D,h,w: the dense prompt comes first
        x = fusion.feat_proj(feat.flatten(2).transpose(1, 2))  # 1,L,C
        keys = x + model.sparse.pe.grid(8, 8)[None]
        tokens = fusion.blocks[0].object_attn(tokens, keys, x, None)  # round 1: no previous mask
        q, k = attn._split(attn.q_proj(tokens)), attn._split(attn.k_proj(keys))  # 1,h,N,d / 1,h,L,d
        manual = (q @ k.transpose(-2, -1) / np.sqrt(q.shape[-1])).softmax(-1)
    assert torch.allclose(before, manual, atol=1e-6)


def test_default_forward_is_unchanged_and_no_hook_is_left():
    model, enc, coords, labels = _tiny_round()
    with torch.no_grad():
        first = model(enc, coords, labels)
    order_attention_weights(model, enc, coords, labels, None, 1)
    assert all(not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(enc, coords, labels), first)


def test_order_maps_and_attention_need_the_parts_they_show(ckpts):
    model, _ = load_checkpoint(ckpts[1])
    assert model.order_mode is None
    _, enc, coords, labels = _tiny_round()
    with pytest.raises(ValueError, match="order-aware attention"):
        order_attention_weights(model, enc, coords, labels)


def test_figure_panels(ckpts):
    (full, cfg), (wo, cfg_wo) = load_checkpoint(ckpts[0]), load_checkpoint(ckpts[1])
    split = build_split(cfg, "layered", "test")
    objects = [(split[0], 0), (split[1], 1)]
    assert (row_label(cfg), row_label(cfg_wo)) == ("full", "wo_order")  # no table: the row key
    predictors = [(row_label(cfg), predictor_for(full, cfg)), ("w/o order", predictor_for(wo, cfg_wo))]
    strip = strip_figure(objects, predictors, (1, 3))
    assert len(strip.axes) == 2 * (1 + 2 * 2)
    titles = [ax.get_title() for ax in strip.axes]
    assert titles[1].startswith("full: 1 click, IoU") and titles[4].startswith("w/o order: 3 clicks, IoU")
    assert titles[0] == f"{split[0].id}#0"
    fig3 = order_figure(objects, predictors[0][1])
    panels = [ax for ax in fig3.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels[1:5]] == ["the data's depth", "model's depth",
                                                      "order map, positive (Eq. 1)", "order map, negative (Eq. 2)"]
    images = [ax.get_images()[0] for ax in panels[1:5]]
    np.testing.assert_allclose(images[0].get_array(), normalised(objects[0][0].depth, "disparity"))  # the scene's
    assert [i.get_cmap().name for i in images] == [DEPTH_CMAP, DEPTH_CMAP, ORDER_CMAP, ORDER_CMAP]
    assert colour_bars(fig3) == 2 * ["depth R (1 = near)", "depth R (1 = near)", "|R - R(click)|", "|R - R(click)|"]
    fig6 = attention_figure(objects, predictors[0][1], block=1)
    panels = [ax for ax in fig6.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 5 and panels[2].get_title() == "positive click, after order bias"
    assert panels[3].get_title() == "negative click, before order bias"
    assert panels[3].get_images()[1].get_cmap().name == ATTENTION_CMAP and len(colour_bars(fig6)) == 2 * 4
    for fig in (strip, fig3, fig6):
        check_readable(fig)
    clicks = probe_clicks(split[0].masks[0])
    assert [c.positive for c in clicks] == [True, False]
    assert split[0].masks[0][clicks[0].y, clicks[0].x] == 1 and split[0].masks[0][clicks[1].y, clicks[1].x] == 0


def test_ois_figure_writes_the_three_figures(ckpts, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figure", "--ckpt", str(ckpts[0]), "--ckpt", str(ckpts[1]), "--out", str(out),
                 "--worst", "1", "--clicks", "1,2", "eval.max_objects=2"]) == 0
    for name in ("qualitative.png", "order_maps.png", "attention.png"):
        check_written(out / name)
    assert not list(out.glob(".*tmp"))
    assert main(["figure", "--ckpt", str(ckpts[1]), "--out", str(tmp_path / "wo"), "--ids", "nowhere#0"]) == 2
    assert "nowhere#0" in capsys.readouterr().err
    assert parse_object_id("davis/bear#2") == ("davis/bear", 2) and parse_object_id("a/b") == ("a/b", 0)


def _write_run(root: Path, row: str, seed: int, ious: list[list[float]]) -> None:
    out = root / row / f"seed{seed}"
    out.mkdir(parents=True)
    payload = {"summary": {}, "per_object": {"ids": [f"o{i}" for i in range(len(ious))], "ious": ious},
               "config": {"table": "table4", "row": row, "seed": seed, "clicks": {"max_eval": 20}},
               "git_commit": None, "seed": seed, "dataset": "davis"}
    (out / "results.json").write_text(json.dumps(payload))


def test_ois_table_plots_one_curve_per_row_mean_over_seeds(tmp_path):
    rng = np.random.default_rng(0)
    curves = {(row, seed): rng.uniform(0, 1, (3, 20)).round(3).tolist() for row in ("full", "wo_order")
              for seed in (0, 1)}
    for (row, seed), ious in curves.items():
        _write_run(tmp_path, row, seed, ious)
    make_table(tmp_path, REPO / "experiments/table4/table.yaml", n_boot=10, wandb_project=None,
               out=lambda *_: None, allow_partial=True)
    check_written(tmp_path / "table_miou_vs_clicks.png")
    runs, _ = collect(tmp_path)
    table = build_table(load_table_spec(REPO / "experiments/table4/table.yaml"), runs, n_boot=10)
    fig = plot_table_curves(table, runs, tmp_path / "again.png")
    lines = fig.axes[0].lines
    assert len(lines) == 2
    want = 100 * np.mean([np.mean(curves[("full", s)], axis=0) for s in (0, 1)], axis=0)
    assert np.allclose(lines[0].get_ydata(), want) and list(lines[0].get_xdata()) == list(range(1, 21))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Full", "w/o order"]  # spec labels
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 20]
    assert ticks and all(float(t).is_integer() for t in ticks)  # whole clicks only
    check_readable(fig)


def test_row_labels_come_from_the_table_spec():
    assert row_label(load_config(TINY_YAML, ["table=table4", "row=wo_order"])) == "w/o order"
    assert row_label(load_config(TINY_YAML, ["table=nowhere", "row=wo_order"])) == "wo_order"  # no spec: the key
    assert row_label(load_config(TINY_YAML, [])) == "tiny"  # no row: the run name


def test_miou_plot_has_whole_click_ticks(tmp_path):
    from ois_lightning.protocol.report import plot_miou

    fig = plot_miou([[0.5, 0.7, 0.8, 0.9, 0.95]] * 2, tmp_path / "miou_vs_clicks.png", "a title")
    check_written(tmp_path / "miou_vs_clicks.png")
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())  # 5 clicks: no 2.5
    check_readable(fig)
