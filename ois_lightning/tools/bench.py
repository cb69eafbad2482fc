"""``ois bench``: measured speed of OIS against the dense-fusion baseline (paper Table 3), in one process.

Every number is the median over ``repeats`` timed runs after ``warmup`` untimed ones, measured on the same
machine and the same inputs; OIS and the baseline are timed alternately so that load from other processes
hits both alike. Sections (docs/benchmarks.md):

* ``per_click``: one click round (prompt fusion + decoder; the encoder excluded) of OIS and of the SegNext-style
  dense self-attention baseline, with the same encoder and decoder, at the paper's input (1036, ViT-B widths)
  with the paper's decoder and with ``model.decoder.logits=quarter``, and at the tiny size; random init (speed
  does not depend on the weights);
* ``clicks``: OIS per-click latency after 1, 5, 10 and 20 clicks (should stay flat);
* ``clicker``: the evaluation clicker's share of one click (exact EDT at full resolution);
* ``encoder``: encoder (+ depth head) time per image;
* ``sat``: SAT latency (Table 3): one image segmented from a 16 x 16 grid of point prompts (paper size on CUDA,
  tiny size on CPU);
* ``train_step``: a real Lightning training step with and without the iterative click simulation (the encoder
  runs once per batch either way), of the tiny config and (not with ``--quick``) of ViT-B widths at 518 (1036 on CUDA);
* ``grid``: a 5-row Table 4 evaluation grid (tiny model) with and without the frozen-encoder feature cache; from
  the paper-size parts, how many clicks per object (isegm early stop) keep a cached grid within 2x one row.

Peak memory is the CUDA allocator's peak on GPU and the peak resident set size above the section's start on CPU.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.measure import machine, timed, torch_threads
from .bench_report import format_table, write_json
from .bench_settings import Settings
from ..protocol.clicks import Clicker
from ..config.schema import ClicksConfig
from ..config.load import load_config
from ..model import ImageEncoding, OISModel, build_model

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
TABLE4_ROWS = ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense")
DENSE = ["model.fusion=dense_self_attention", "model.sparse.enabled=false"]
TINY_WIDTHS = ["model.backbone.name=tiny", "model.sparse.dim=64", "model.sparse.num_heads=4",
               "model.sparse.ffn_dim=128"]
RANDOM_WEIGHTS = "model.backbone.random_init=true"  # timings need no published weights files
PAPER_WIDTHS = ["model.backbone.name=dav2-vitb", "model.sparse.dim=128", "model.sparse.num_heads=8",
                "model.sparse.ffn_dim=512", RANDOM_WEIGHTS]  # the paper's widths over experiments/tiny.yaml
TARGETS = {  # the speed targets (docs/benchmarks.md): ratio key -> upper bound
    "ois_vs_dense_per_click_paper": 0.5,
    "ois_vs_dense_per_click_paper_quarter_logits": 0.5,
    "click20_vs_click1": 1.2,
    "train_click_simulation_overhead": 0.5,
    "train_click_simulation_overhead_vitb": 0.5,
    "grid_with_cache_vs_one_row": 2.0,
}


# --- inputs --------------------------------------------------------------------------------------------------

def _widths(backbone: str) -> list[str]:
    """Overrides for ``backbone`` at its own widths (the tiny one with small prompt widths)."""
    return TINY_WIDTHS if backbone == "tiny" else [f"model.backbone.name={backbone}", RANDOM_WEIGHTS]


def _model(overrides: list[str], device: torch.device, seed: int = 0) -> OISModel:
    torch.manual_seed(seed)
    cfg = load_config(EXPERIMENTS / "base.yaml", overrides)
    return build_model(cfg.model).to(device).eval()


def _clicks(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct-looking clicks, the first positive, then alternating: coords (1,n,2), labels (1,n)."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(1, n, 2, generator=g) * (size - 1)).round()
    labels = torch.tensor([[1 if i % 2 == 0 else 0 for i in range(n)]])
    return coords.to(device), labels.to(device)


def _prev_mask(size: int, device: torch.device) -> torch.Tensor:
    prev = torch.zeros(1, 1, size, size, device=device)
    prev[..., size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 1
    return prev


# --- sections ------------------------------------------------------------------------------------------------

@torch.no_grad()
def bench_per_click(backbone: str, size: int, s: Settings, device: torch.device, logits: str = "input",
                    enc: ImageEncoding | None = None) -> tuple[dict, ImageEncoding, OISModel]:
    """OIS vs dense fusion, one click round each, same encoding, clicks and decoder (``model.decoder.logits``);
    also returns the OIS encoding and model. ``enc``: an encoding of the bench image by the same frozen encoder
    (same seed, same backbone), reused instead of encoding the image again."""
    common = _widths(backbone) + [f"model.input_size={size}", f"model.decoder.logits={logits}"]
    ois, dense = _model(common, device), _model(common + DENSE, device)
    if enc is None:
        image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        enc = ois.encode(image)
    coords, labels = _clicks(s.compare_clicks, size, device)
    prev = _prev_mask(size, device)
    r = timed({"ois": lambda: ois(enc, coords, labels, prev), "dense": lambda: dense(enc, coords, labels, prev)},
              s.warmup, s.repeats, device)
    return {
        "backbone": backbone, "input_size": size, "decoder_logits": logits, "clicks": s.compare_clicks,
        "ois_s": r["ois"]["s"], "dense_s": r["dense"]["s"], "ratio": r["ois"]["s"] / r["dense"]["s"],
        "ois_peak_mb": r["ois"]["peak_mb"], "dense_peak_mb": r["dense"]["peak_mb"],
    }, enc, ois


@torch.no_grad()
def bench_clicks(model: OISModel, enc: ImageEncoding, size: int, s: Settings, device: torch.device) -> dict:
    """OIS per-click latency after 1, 5, 10, 20 clicks (previous mask from round 2 on, as in the protocol)."""
    prev = _prev_mask(size, device)
    fns = {}
    for n in (1, 5, 10, 20):
        coords, labels = _clicks(n, size, device)
        fns[str(n)] = (lambda c=coords, lab=labels, p=(prev if n > 1 else None): model(enc, c, lab, p))
    r = timed(fns, s.warmup, s.repeats, device)
    out: dict[str, Any] = {f"click{n}_s": v["s"] for n, v in r.items()}
    out["ratio_20_vs_1"] = r["20"]["s"] / r["1"]["s"]
    return out


def bench_clicker(size: int, per_click_s: float, s: Settings) -> dict:
    """One :meth:`Clicker.next_click` (exact EDT) on a size x size mask, and its share of a full click."""
    gt = np.zeros((size, size), np.int8)
    gt[size // 5: 4 * size // 5, size // 4: 3 * size // 4] = 1
    pred = np.zeros_like(gt, dtype=bool)
    pred[size // 3: size // 2, size // 3: size // 2] = True
    r = timed({"clicker": lambda: Clicker(gt).next_click(pred)}, s.warmup, s.repeats, torch.device("cpu"))
    t = r["clicker"]["s"]
    return {"mask_size": size, "clicker_s": t, "share_of_click": t / (t + per_click_s)}


@torch.no_grad()
def bench_encoder(model: OISModel, size: int, s: Settings, device: torch.device) -> dict:
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    r = timed({"encoder": lambda: model.encode(image)}, s.warmup, s.slow_repeats, device)
    return {"input_size": size, "with_depth_head": model.uses_depth, "s_per_image": r["encoder"]["s"],
            "peak_mb": r["encoder"]["peak_mb"]}


def _train_steps(max_extra: int | None, steps: int, batch: int, overrides: list[str], device: torch.device) -> dict:
    """Median and mean seconds of real Lightning training steps (training_step + backward + Adam) of
    ``experiments/tiny.yaml`` + ``overrides`` on layered scenes."""
    from ..lit.timing import time_training_steps  # Lightning: only in lit/

    cfg = load_config(EXPERIMENTS / "tiny.yaml", overrides + [
        *([] if max_extra is None else [f"clicks.max_extra={max_extra}"]), "logger.kind=none",
        f"train.max_steps={steps}", "data.num_workers=0",
        f"data.batch_size={batch}", f"data.layered.train_length={batch * steps}"])
    return time_training_steps(cfg, device)


@torch.no_grad()
def bench_sat(s: Settings, device: torch.device) -> dict:
    """SAT latency (Sec. 4.1, Table 3): the Segment Anything Task on one image, prompted by a ``sat_grid`` x
    ``sat_grid`` grid of single positive points: one encoder pass, then one first-round click per point, decoded
    ``sat_batch`` points at a time over the shared encoding. Mask post-processing (SAM's quality filter and NMS)
    is not included."""
    size, n = s.sat_input, s.sat_grid
    model = _model(_widths(s.sat_backbone) + [f"model.input_size={size}"], device)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    centres = (torch.arange(n, dtype=torch.float32) + 0.5) * size / n - 0.5  # pixel centres of the grid cells
    coords = torch.cartesian_prod(centres, centres).view(-1, 1, 2).to(device)  # P,1,2 (y, x)
    labels = torch.ones(coords.shape[0], 1, dtype=torch.long, device=device)  # P,1

    def sat() -> None:
        enc = model.encode(image)  # once for the image
        shared = enc.select(torch.zeros(s.sat_batch, dtype=torch.long, device=device))  # that encoding, batch times
        for start in range(0, coords.shape[0], s.sat_batch):
            b = min(s.sat_batch, coords.shape[0] - start)
            model(shared.select(slice(0, b)), coords[start:start + b], labels[start:start + b])

    r = timed({"sat": sat}, s.warmup, s.slow_repeats, device)["sat"]
    return {"backbone": s.sat_backbone, "input_size": size, "points": int(coords.shape[0]), "batch": s.sat_batch,
            "s": r["s"], "per_point_s": r["s"] / coords.shape[0], "peak_mb": r["peak_mb"]}


def bench_train_step(steps: int, batch: int, overrides: list[str], device: torch.device) -> dict:
    """Training steps without (clicks.max_extra=0) and with (the config's 0..clicks.max_extra rounds, 0..3 in
    the paper) click simulation.

    ``overhead`` is measured over the timed steps, whose simulated rounds depend on the step index;
    ``overhead_per_expected_rounds`` rescales it to the expected max_extra / 2 rounds (cost per round x that)."""
    without, with_sim = _train_steps(0, steps, batch, overrides, device), _train_steps(None, steps, batch,
                                                                                        overrides, device)
    extra = with_sim["mean_step_s"] / without["mean_step_s"] - 1.0
    rounds, expected = with_sim["mean_rounds"], with_sim["max_extra"] / 2
    return {"without_simulation": without, "with_simulation": with_sim, "overhead": extra,
            "expected_rounds": expected,
            "overhead_per_expected_rounds": extra * expected / rounds if rounds else float("nan")}


def bench_grid(s: Settings, device: torch.device) -> dict:
    """The 5 Table 4 rows (tiny model, shared frozen encoder) evaluated on generated scenes: one row alone,
    the grid without the feature cache, and the grid with a cold cache."""
    from ..protocol.evaluate import evaluate
    from ..data.splits import eval_dataset

    size = s.tiny_input
    overrides = TINY_WIDTHS + [f"model.input_size={size}", "data.test=[layered]", f"data.layered.size={size}",
                               f"data.layered.test_length={s.grid_objects}",
                               f"eval.max_objects={s.grid_objects}", f"clicks.max_eval={s.grid_clicks}",
                               "data.depth.source=model"]
    cfgs = [load_config(EXPERIMENTS / "table4" / f"{row}.yaml", overrides) for row in TABLE4_ROWS]
    dataset = eval_dataset(cfgs[0], "test")
    models = []
    for i, cfg in enumerate(cfgs):
        torch.manual_seed(i)
        model = build_model(cfg.model).to(device)
        if models:  # the rows share one frozen encoder checkpoint
            model.pretrained.load_state_dict(models[0].pretrained.state_dict())
            model.depth_head.load_state_dict(models[0].depth_head.state_dict())
        models.append(model)

    def run(rows: range, cache: str | None) -> tuple[float, list]:
        start = time.perf_counter()
        results = []
        for i in rows:
            cfgs[i].eval.feature_cache = cache
            results.append(evaluate(models[i], dataset, cfgs[i], progress=False))
        return time.perf_counter() - start, results

    run(range(1), None)  # warm-up
    one_row, _ = run(range(1), None)
    no_cache, plain = run(range(len(cfgs)), None)
    with tempfile.TemporaryDirectory(prefix="ois_feature_cache_") as folder:
        with_cache, cached = run(range(len(cfgs)), folder)
    identical = all(a.ious == b.ious for a, b in zip(plain, cached))
    summary = plain[0].summary
    return {
        "rows": list(TABLE4_ROWS), "images": int(summary["num_images"]), "objects": int(summary["num_objects"]),
        "clicks_per_object": int(cfgs[0].clicks.max_eval), "input_size": size,
        "one_row_s": one_row, "grid_no_cache_s": no_cache, "grid_cache_s": with_cache,
        "grid_no_cache_vs_one_row": no_cache / one_row, "grid_cache_vs_one_row": with_cache / one_row,
        "encoder_s_per_image": summary["encoder_s_per_image"], "click_s_per_click": summary["click_s_per_click"],
        "cached_equals_uncached": identical,
    }


def grid_at_paper_size(encoder_s: float, click_s: dict[str, float], max_clicks: int,
                       rows: int = len(TABLE4_ROWS)) -> dict:
    """What a cached ``rows``-row grid costs against one row at the paper's size, from the measured parts: with
    E = encoder per image and c = one click, n clicks per object give (E + rows n c) / (E + n c), at most 2 iff
    n <= E / ((rows - 2) c); ``ratio_at_max_clicks`` is n = ``max_clicks`` (no early stop). ``click_s``: decoder
    variant -> c. One object per image (DAVIS)."""
    return {name: {"break_even_clicks_per_object": encoder_s / ((rows - 2) * c), "max_clicks": max_clicks,
                   "ratio_at_max_clicks": (encoder_s + rows * max_clicks * c) / (encoder_s + max_clicks * c)}
            for name, c in click_s.items()}


# --- the run -------------------------------------------------------------------------------------------------

def run(quick: bool = False, device: str = "auto", sections: tuple[str, ...] | None = None) -> dict:
    """All sections (or the named ones) -> the bench.json payload."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    s = Settings.make(quick, dev)
    want = set(sections or ("per_click", "clicks", "clicker", "encoder", "sat", "train_step", "grid"))
    out: dict[str, Any] = {"machine": machine(), "device": str(dev), "quick": quick,
                           "settings": {"warmup": s.warmup, "repeats": s.repeats, "slow_repeats": s.slow_repeats}}
    ratios: dict[str, float] = {}
    out["ratios"] = ratios  # first in the file
    if want & {"per_click", "clicks", "clicker", "encoder"}:
        paper, enc, ois = bench_per_click(s.paper_backbone, s.paper_input, s, dev)
        out["per_click"] = {"paper": paper}
        ratios["ois_vs_dense_per_click_paper"] = paper["ratio"]
        if "clicks" in want:
            out["clicks"] = bench_clicks(ois, enc, s.paper_input, s, dev)
            ratios["click20_vs_click1"] = out["clicks"]["ratio_20_vs_1"]
        if "clicker" in want:
            out["clicker"] = bench_clicker(s.paper_input, paper["ois_s"], s)
            ratios["clicker_share_of_click"] = out["clicker"]["share_of_click"]
        if "encoder" in want:
            out["encoder"] = bench_encoder(ois, s.paper_input, s, dev)
            ratios["encoder_vs_ois_click"] = out["encoder"]["s_per_image"] / paper["ois_s"]
        del ois
        quarter, _, _ = bench_per_click(s.paper_backbone, s.paper_input, s, dev, logits="quarter", enc=enc)
        del enc
        out["per_click"]["paper_quarter_logits"] = quarter
        ratios["ois_vs_dense_per_click_paper_quarter_logits"] = quarter["ratio"]
        ratios["ois_quarter_vs_input_logits_per_click"] = quarter["ois_s"] / paper["ois_s"]
        tiny, _, _ = bench_per_click("tiny", s.tiny_input, s, dev)
        out["per_click"]["tiny"] = tiny
        ratios["ois_vs_dense_per_click_tiny"] = tiny["ratio"]
    if "sat" in want:
        out["sat"] = bench_sat(s, dev)
    if "train_step" in want:
        small = ["model.input_size=112", "data.layered.size=112"] if s.quick else []
        out["train_step"] = {"tiny": bench_train_step(s.train_steps, s.train_batch, small, dev)}
        ratios["train_click_simulation_overhead"] = out["train_step"]["tiny"]["overhead_per_expected_rounds"]
        if s.vitb_train_input:
            size = s.vitb_train_input
            vitb = PAPER_WIDTHS + [f"model.input_size={size}", f"data.layered.size={size}", "data.depth.source=model"]
            out["train_step"]["vitb"] = bench_train_step(s.vitb_train_steps, 1, vitb, dev)
            ratios["train_click_simulation_overhead_vitb"] = out["train_step"]["vitb"]["overhead_per_expected_rounds"]
    if "encoder" in out and "paper_quarter_logits" in out.get("per_click", {}):
        pc = out["per_click"]
        out["grid_paper_size"] = grid_at_paper_size(out["encoder"]["s_per_image"], {
            "input_logits": pc["paper"]["ois_s"], "quarter_logits": pc["paper_quarter_logits"]["ois_s"]},
            ClicksConfig().max_eval)
        ratios["grid_break_even_clicks_per_object_paper"] = \
            out["grid_paper_size"]["quarter_logits"]["break_even_clicks_per_object"]
    if "grid" in want:
        out["grid"] = bench_grid(s, dev)
        ratios["grid_with_cache_vs_one_row"] = out["grid"]["grid_cache_vs_one_row"]
        ratios["grid_without_cache_vs_one_row"] = out["grid"]["grid_no_cache_vs_one_row"]
    out["targets"] = {k: {"value": ratios[k], "at_most": bound, "met": ratios[k] <= bound}
                      for k, bound in TARGETS.items() if k in ratios}
    return out


def main(quick: bool, out: str, device: str = "auto", threads: int | None = None) -> int:
    with torch_threads(threads):
        payload = run(quick, device)
    path = write_json(payload, out)
    print(format_table(payload))
    print(f"wrote {path}")
    return 0
