"""``ois pretrain mae``: the ``mae-tiny`` ViT trained as a masked autoencoder on layered scenes, written in the
MAE release layout (``{"model": state_dict}``: encoder ``patch_embed.proj.*``, ``cls_token``, ``pos_embed``,
``blocks.*``, ``norm.*``; decoder ``decoder_*`` and ``mask_token``).

MAE's recipe (He et al. 2022; facebookresearch/mae ``models_mae.py``) in miniature: 75% of the patches masked by a
per-image random shuffle, the encoder sees the visible ones only, a small transformer decoder fills in mask
tokens, the loss is the MSE to per-patch normalised pixels (``norm_pix_loss``) on the masked patches; fixed 2-D
sin-cos position embeddings, xavier-uniform linear layers, AdamW. :func:`~ois_lightning.model.backbones.build`
drops the decoder keys (``BackboneSpec.drop_keys``) and loads the encoder strictly.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..model.specs import SPECS
from ..model.backbones import build, build_encoder
from ..model.vit import LAYER_NORM_EPS, ViTEncoder
from .budgets import MAEBudget
from .common import (HELDOUT_SCENE_SEED, imagenet_normalise, reuse_or_start, run_report, scene_batch,
                     train_steps, training_scenes, write_outputs)

BACKBONE = "mae-tiny"
MASK_RATIO = 0.75


def sincos_pos_embed(dim: int, grid: int) -> Tensor:
    """MAE's fixed ``get_2d_sincos_pos_embed(dim, grid, cls_token=True)`` (``util/pos_embed.py``): (1+G*G, dim),
    the cls row zero, the first half of the channels encoding the column, the second the row."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # D/4
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def embed(pos: Tensor) -> Tensor:  # G*G -> G*G, D/2
        angle = pos.flatten().double()[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    table = torch.cat([embed(cols), embed(rows)], dim=1).float()
    return torch.cat([torch.zeros(1, dim), table])


def xavier_init_(module: nn.Module) -> None:
    """MAE's ``_init_weights``: xavier-uniform linear layers with zero bias, LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MAEDecoder(nn.Module):
    """MAE's decoder under its published names: visible latents + mask tokens -> pixels of every patch."""

    def __init__(self, embed_dim: int, patch: int, grid: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        self.decoder_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(dim, grid)[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(dim, heads, 4.0, qkv_bias=True, norm_layer=norm)
                                             for _ in range(depth)])
        self.decoder_norm = norm(dim)
        self.decoder_pred = nn.Linear(dim, patch * patch * 3)
        xavier_init_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, restore: Tensor) -> Tensor:
        """latent (B,1+K,C) cls + visible tokens, restore (B,L) -> (B,L,p*p*3)."""
        x = self.decoder_embed(latent)  # B,1+K,D
        b, _, d = x.shape
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, restore.shape[1] + 1 - x.shape[1], d)], dim=1)
        tokens = tokens.gather(1, restore[..., None].expand(-1, -1, d))  # B,L,D in image order
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def random_masking(b: int, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """MAE's per-image shuffle: keep (B,K) indices of the visible patches, restore (B,L) the inverse
    permutation, mask (B,L) 1 = masked, K = int(L * (1 - MASK_RATIO))."""
    keep_count = int(n * (1 - MASK_RATIO))
    shuffle = torch.rand(b, n, generator=generator).argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(b, n)
    mask[:, :keep_count] = 0
    return shuffle[:, :keep_count], restore, mask.gather(1, restore)


def encode_visible(enc: ViTEncoder, image: Tensor, keep: Tensor) -> Tensor:
    """MAE's ``forward_encoder`` on our ViT: image (B,3,S,S) at the pre-training grid, keep (B,K) -> (B,1+K,C)."""
    x = enc.patch_embed(image) + enc.pos_embed[:, 1:]  # B,L,C
    x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # B,K,C
    cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for blk in enc.blocks:
        x = blk(x)
    return enc.norm(x)


def patchify(image: Tensor, p: int) -> Tensor:
    """(B,3,H,W) -> (B,L,p*p*3), MAE's ``patchify`` order (row-major patches, pixels then channels)."""
    b, c, h, w = image.shape
    x = image.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def mae_loss(enc: ViTEncoder, dec: MAEDecoder, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """MSE to per-patch normalised pixels on the masked patches; images (B,3,S,S) RGB in [0,1]."""
    x = imagenet_normalise(images)
    target = patchify(x, enc.patch_size)  # B,L,p*p*3
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    keep, restore, mask = random_masking(x.shape[0], target.shape[1], generator)
    pred = dec(encode_visible(enc, x, keep), restore)
    return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()


@torch.no_grad()
def heldout_loss(enc: ViTEncoder, dec: MAEDecoder, size: int, count: int, seed: int, scenes: str) -> float:
    """Reconstruction loss on ``count`` held-out scenes with masks fixed by ``seed``."""
    enc.eval(), dec.eval()
    images, _ = scene_batch(HELDOUT_SCENE_SEED, 0, count, size, scenes)
    return mae_loss(enc, dec, images, torch.Generator().manual_seed(seed)).item()


def pretrain_mae(out: str | Path, budget: MAEBudget = MAEBudget(), threads: int | None = 1,
                 force: bool = False) -> dict:
    """Train, measure the held-out reconstruction loss before and after, write ``out`` (MAE layout) and
    ``out`` .json; returns the report. A finished run into ``out`` with the same budget is reused."""
    out = Path(out)
    done = reuse_or_start(out, budget, threads, force)
    if done is not None:
        return done
    spec = SPECS[BACKBONE]
    size = spec.patch_size * spec.pretrain_grid  # the position table's grid, as MAE pre-trains at 224 / 16
    torch.manual_seed(budget.seed)
    enc = build_encoder(spec)
    xavier_init_(enc)
    with torch.no_grad():
        w = enc.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(enc.cls_token, std=0.02)
        enc.pos_embed.copy_(sincos_pos_embed(spec.embed_dim, spec.pretrain_grid)[None])
    enc.pos_embed.requires_grad_(False)
    dec = MAEDecoder(spec.embed_dim, spec.patch_size, spec.pretrain_grid, budget.decoder_dim,
                     budget.decoder_depth, budget.decoder_heads)
    before = heldout_loss(enc, dec, size, budget.heldout, budget.seed, budget.scenes)
    print(f"untrained held-out reconstruction loss {before:.4f}")
    masks = torch.Generator().manual_seed(budget.seed + 1)

    def loss_of(images: Tensor, _depth: Tensor) -> Tensor:
        enc.train(), dec.train()
        return mae_loss(enc, dec, images, masks)

    params = [p for p in (*enc.parameters(), *dec.parameters()) if p.requires_grad]
    batches = training_scenes(budget.steps, budget.batch, size, budget.scenes)
    losses, seconds = train_steps(params, loss_of, batches, budget.steps, budget.lr, budget.weight_decay)
    after = heldout_loss(enc, dec, size, budget.heldout, budget.seed, budget.scenes)
    print(f"pretrained held-out reconstruction loss {after:.4f}")
    report = {
        **run_report(budget, losses, seconds), "backbone": BACKBONE, "layout": "mae", "size": size,
        "mask_ratio": MASK_RATIO,
        # predicting every normalised patch as its mean (all zeros) scores about 1
        "heldout_loss": {"untrained": before, "pretrained": after},
    }
    write_outputs(out, {"model": {**enc.state_dict(), **dec.state_dict()}}, report)
    build(BACKBONE, out)  # the encoder loads strictly, the decoder keys dropped
    return report
