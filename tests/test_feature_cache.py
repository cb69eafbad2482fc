"""The frozen-encoder feature cache: identical encodings, keys, sharing across rows, eviction, atomic writes."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from ois_lightning.config.load import load_config
from ois_lightning.protocol.feature_cache import FeatureCache, encoder_identity
from ois_lightning.model import build_model

from .helpers import REPO, TINY


def _model(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_config(None, TINY + list(overrides)).model).eval()


def _same_encoder(dst, src):
    """Give ``dst`` the frozen parts of ``src`` (as rows sharing one encoder checkpoint have)."""
    dst.pretrained.load_state_dict(src.pretrained.state_dict())
    dst.depth_head.load_state_dict(src.depth_head.state_dict())
    return dst


def _image(seed: int = 0, size: int = 112):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_same(a, b):
    assert a.size == b.size and len(a.feats) == len(b.feats)
    assert all(torch.equal(x, y) for x, y in zip(a.feats, b.feats))
    assert (a.depth is None) == (b.depth is None)
    assert a.depth is None or torch.equal(a.depth, b.depth)


@torch.no_grad()
def test_cached_encoding_is_identical_and_hit(tmp_path):
    model = _model()
    cache = FeatureCache(tmp_path, 1.0, model)
    image = _image()
    first = cache.encode(image)
    second = cache.encode(image)
    assert (cache.misses, cache.hits) == (1, 1)
    reference = model.encode(image)
    _assert_same(first, reference)
    _assert_same(second, reference)
    assert second.depth is not None  # the full model uses its depth head
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp"))


@torch.no_grad()
def test_key_covers_input_size_content_depth_and_encoder_weights(tmp_path):
    model = _model()
    cache = FeatureCache(tmp_path, 1.0, model)
    depth = torch.rand(1, 1, 112, 112)
    keys = {
        cache.key(_image(0), None, "disparity"),
        cache.key(_image(1), None, "disparity"),  # content
        cache.key(_image(0, size=98), None, "disparity"),  # input size / transform
        cache.key(_image(0), depth, "disparity"),  # a given depth map
        cache.key(_image(0), depth, "depth"),  # its kind
    }
    assert len(keys) == 5
    assert encoder_identity(_model(seed=1)) != cache.identity  # other encoder weights
    trained_differently = _same_encoder(_model(seed=2), model)
    assert encoder_identity(trained_differently) == cache.identity  # per-click parts do not matter


@torch.no_grad()
def test_rows_share_entries_with_and_without_depth(tmp_path):
    full = _model()
    wo_order = _same_encoder(_model("model.order.enabled=false", seed=1), full)
    image = _image()
    # a row without depth first: its entry has no depth, so the full row recomputes (and stores depth)
    plain = FeatureCache(tmp_path, 1.0, wo_order)
    _assert_same(plain.encode(image), wo_order.encode(image))
    cache = FeatureCache(tmp_path, 1.0, full)
    _assert_same(cache.encode(image), full.encode(image))
    assert (cache.misses, cache.hits) == (1, 0)
    # now every row hits the same file; the row without depth gets exactly what its encode returns
    _assert_same(cache.encode(image), full.encode(image))
    again = FeatureCache(tmp_path, 1.0, wo_order)
    _assert_same(again.encode(image), wo_order.encode(image))
    assert again.hits == 1 and cache.hits == 1 and len(list(tmp_path.glob("*.pt"))) == 1


@torch.no_grad()
def test_least_recently_used_entries_are_evicted(tmp_path):
    model = _model()
    cache = FeatureCache(tmp_path, 1.0, model)
    cache.encode(_image(0))
    entry = next(tmp_path.glob("*.pt")).stat().st_size
    cache = FeatureCache(tmp_path, 2.5 * entry / 1e9, model)  # room for two entries
    cache.encode(_image(1))
    old = time.time() - 100
    for i, path in enumerate(sorted(tmp_path.glob("*.pt"), key=lambda p: p.stat().st_mtime)):
        os.utime(path, (old + i, old + i))
    cache.encode(_image(0))  # a hit refreshes image 0, so image 1 is now the oldest
    cache.encode(_image(2))
    names = {p.name for p in tmp_path.glob("*.pt")}
    key = lambda i: cache.key(_image(i), None, "disparity") + ".pt"  # noqa: E731
    assert names == {key(0), key(2)}


@torch.no_grad()
def test_concurrent_writers_and_unreadable_entries(tmp_path):
    model = _model()
    image = _image()
    caches = [FeatureCache(tmp_path, 1.0, model) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: c._store(c.key(image, None, "disparity"), model.encode(image)), caches))
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp"))
    _assert_same(caches[0].encode(image), model.encode(image))
    path = next(tmp_path.glob("*.pt"))
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable entry"):
        _assert_same(caches[1].encode(image), model.encode(image))
    assert caches[1].misses == 1
    _assert_same(caches[2].encode(image), model.encode(image))  # rewritten
    assert caches[2].hits == 1


def test_bad_folder_and_size_are_clear_errors(tmp_path):
    model = _model()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="eval.feature_cache=.*cannot create"):
        FeatureCache(blocker / "sub", 1.0, model)
    with pytest.raises(ValueError, match="eval.cache_max_gb must be > 0"):
        FeatureCache(tmp_path, 0, model)


TIMING = ("SPC", "encoder_s_per_image", "click_s_per_click")


def test_cached_and_uncached_evaluation_write_identical_metrics(tmp_path):
    import json

    from ois_lightning.protocol.evaluate import evaluate
    from ois_lightning.protocol.report import write_results
    from ois_lightning.data.splits import eval_dataset

    overrides = ["model.input_size=112", "data.layered.size=112", "data.layered.test_length=2",
                 "eval.max_objects=2", "clicks.max_eval=5", f"output_dir={tmp_path / 'plain'}"]
    results = {}
    for name, extra in (("plain", []), ("miss", [f"eval.feature_cache={tmp_path / 'cache'}"]),
                        ("hit", [f"eval.feature_cache={tmp_path / 'cache'}"])):
        cfg = load_config(REPO / "experiments" / "tiny.yaml", overrides + extra + [f"output_dir={tmp_path / name}"])
        torch.manual_seed(0)
        model = build_model(cfg.model)
        path = write_results(evaluate(model, eval_dataset(cfg, "test"), cfg, progress=False), cfg.output_dir, cfg,
                             "layered")
        results[name] = json.loads(path.read_text())
    assert len(list((tmp_path / "cache").glob("*.pt"))) == results["plain"]["summary"]["num_images"]
    for name in ("miss", "hit"):
        assert results[name]["per_object"] == results["plain"]["per_object"]
        metrics = {k: v for k, v in results[name]["summary"].items() if k not in TIMING}
        assert metrics == {k: v for k, v in results["plain"]["summary"].items() if k not in TIMING}


@torch.no_grad()
def test_key_covers_the_autocast_in_force(tmp_path):
    """eval.precision: a bf16 encoding is not served to a 32-bit run of the same weights, nor the reverse."""
    model = _model()
    cache = FeatureCache(tmp_path, 1.0, model)
    image = _image()
    full = cache.encode(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = cache.encode(image)
        again = cache.encode(image)
    assert (cache.misses, cache.hits) == (2, 1)
    assert not torch.equal(full.feats[0], half.feats[0])  # bf16 matmuls: other values
    _assert_same(again, half)
    _assert_same(cache.encode(image), full)
