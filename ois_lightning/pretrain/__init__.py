"""Pre-training the miniature's backbones on layered scenes (``ois pretrain depth|mae``, docs/pretraining.md).

``depth``: the tiny ViT + DPT depth head trained for relative depth with an affine-invariant loss, written in the
official Depth Anything V2 layout. ``mae``: the ``mae-tiny`` ViT as a masked autoencoder, written in the MAE
release layout. Both load through :func:`ois_lightning.model.backbones.build`, the path published weights take.
"""
