"""The report of ``ois bench``: bench.json (atomic) and the summary it prints (docs/benchmarks.md)."""
from __future__ import annotations

import json
from pathlib import Path

from ..utils.atomic import atomic_write


def write_json(payload: dict, path: str | Path) -> Path:
    """bench.json, atomically (temp file + os.replace)."""
    return atomic_write(path, lambda f: json.dump(payload, f, indent=1))


def _ms(x: float) -> str:
    return f"{1000 * x:9.1f} ms"


def format_table(r: dict) -> str:
    """The human-readable summary printed by ``ois bench``."""
    lines = [f"ois bench on {r['machine']['cpu']} ({r['device']}, torch {r['machine']['torch']}, "
             f"{r['machine']['torch_threads']} threads){' [quick]' if r['quick'] else ''}", "", "ratios:"]
    for k, v in r["ratios"].items():
        t = r["targets"].get(k)
        mark = "" if t is None else f"   (target <= {t['at_most']}: {'met' if t['met'] else 'MISSED'})"
        lines.append(f"  {k:<34} {v:7.3f}{mark}")
    for name, p in r.get("per_click", {}).items():
        lines.append(f"per click [{name}: {p['backbone']} @ {p['input_size']}, logits at {p['decoder_logits']}, "
                     f"{p['clicks']} clicks]: "
                     f"OIS {_ms(p['ois_s'])} ({p['ois_peak_mb']:.0f} MB)  dense {_ms(p['dense_s'])} "
                     f"({p['dense_peak_mb']:.0f} MB)")
    if "clicks" in r:
        c = r["clicks"]
        lines.append("OIS per click after 1/5/10/20 clicks: " + " ".join(_ms(c[f'click{n}_s']) for n in (1, 5, 10, 20)))
    if "clicker" in r:
        lines.append(f"clicker (EDT {r['clicker']['mask_size']}^2): {_ms(r['clicker']['clicker_s'])}")
    if "encoder" in r:
        e = r["encoder"]
        lines.append(f"encoder @ {e['input_size']}: {_ms(e['s_per_image'])} per image ({e['peak_mb']:.0f} MB)")
    if "sat" in r:
        t = r["sat"]
        lines.append(f"SAT latency ({t['backbone']} @ {t['input_size']}, {t['points']} points, {t['batch']} at a time):"
                     f" {t['s']:.2f} s ({_ms(t['per_point_s']).strip()} per point)")
    for name, t in r.get("train_step", {}).items():
        w = t["without_simulation"]
        lines.append(f"train step ({name} @ {w['input_size']}, batch {w['batch_size']}): without simulation "
                     f"{_ms(w['mean_step_s'])}, with {_ms(t['with_simulation']['mean_step_s'])}"
                     f" (mean {t['with_simulation']['mean_rounds']:.2f} rounds)")
    for name, g in r.get("grid_paper_size", {}).items():
        lines.append(f"cached 5-row grid at the paper size ({name}): <= 2x one row iff objects average <= "
                     f"{g['break_even_clicks_per_object']:.1f} clicks; at {g['max_clicks']} clicks "
                     f"{g['ratio_at_max_clicks']:.2f}x")
    if "grid" in r:
        g = r["grid"]
        lines.append(f"Table 4 grid ({len(g['rows'])} rows, {g['objects']} objects x {g['clicks_per_object']} clicks): "
                     f"one row {g['one_row_s']:.2f} s, grid {g['grid_no_cache_s']:.2f} s, with cache "
                     f"{g['grid_cache_s']:.2f} s (identical results: {g['cached_equals_uncached']})")
    return "\n".join(lines)
