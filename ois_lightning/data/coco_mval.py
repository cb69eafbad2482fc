"""COCO-MVal: 800 COCO val images with one object each, published in the DAVIS layout (``root/img/<stem>.jpg``,
``root/gt/<stem>.png``) and read by isegm with its DAVIS loader (SamsungLabs/ritm_interactive_segmentation,
``isegm/inference/utils.py``, ``get_dataset('COCO_MVal')``). Its own name keeps its ids (``coco_mval/<stem>``)
and results apart from DAVIS in one run."""
from __future__ import annotations

from .davis import Davis


class CocoMVal(Davis):
    """The COCO-MVal benchmark: DAVIS's folders and decoding (maximum over channels > 0) under another name."""

    name = "coco_mval"
