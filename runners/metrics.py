"""mmseg's IoUMetric and mmdet's CocoMetric, reporting raw floats.

The stock metrics round (mIoU to 2 decimals, mAP to 3): rounded numbers averaged over seeds
give biased means and fake ties, so these subclasses return the unrounded values. Every metric
is in percent (mIoU 74.87, bbox_mAP 41.9), as the paper and MMRazor print them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS as DET_METRICS
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS as SEG_METRICS

from kdbench.store import PER_CLASS  # the non-scalar result: {"classes": [names], "<measure>": [percent or None]}

COCO_ITEMS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


def class_values(names, **measures) -> dict:
    """The per-class result of one evaluation: the class names and, per measure (``IoU``, ``Acc``,
    ``AP``), one value per class in percent, unrounded; None where the class has no value (NaN: not
    in the ground truth, or in neither ground truth nor prediction)."""
    out: dict = {"classes": [str(name) for name in names]}
    for measure, values in measures.items():
        out[measure] = [float(v) * 100 if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]
    return out


@SEG_METRICS.register_module(force=True)
class KDIoUMetric(IoUMetric):
    """mIoU, mAcc and aAcc over the whole split, unrounded, in percent, with the classes evaluated
    and what a constant predictor would score on the split (``chance_levels``); ``per_class``: each
    class's IoU and accuracy by name (``class_values``), not a scalar: runners.hooks.MetricsHook keeps it
    apart from the metrics."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        columns = tuple(zip(*results))
        per_class = self.total_area_to_metrics(
            sum(columns[0]), sum(columns[1]), sum(columns[2]), sum(columns[3]),
            self.metrics, self.nan_to_num, self.beta,
        )
        out: dict[str, float] = OrderedDict()
        for name, values in per_class.items():
            values = np.asarray(values, dtype=np.float64)
            out[name if name == "aAcc" else f"m{name}"] = float(np.nanmean(values) * 100)
        # Classes absent from both prediction and ground truth are NaN and left out of the
        # mean (mmseg's convention); the count says how many classes the mean is over.
        iou = np.asarray(per_class.get("IoU", []), dtype=np.float64)
        out["classes_evaluated"] = float(np.count_nonzero(~np.isnan(iou)))
        out.update(chance_levels(np.asarray(sum(columns[3]), dtype=np.float64)))
        names = list((self.dataset_meta or {}).get("classes") or ())
        if len(iou):
            acc = np.asarray(per_class.get("Acc", [math.nan] * len(iou)), dtype=np.float64)
            names = names if len(names) == len(iou) else [str(i) for i in range(len(iou))]
            out[PER_CLASS] = class_values(names, IoU=iou, Acc=acc)
        return out


def chance_levels(label_area: np.ndarray) -> dict[str, float]:
    """What the best constant predictor scores on a split whose ground truth has ``label_area[c]``
    pixels of class c (ignored pixels left out), in percent: predicting the most frequent class k
    everywhere gives IoU n_k / N on k and 0 on every other class present (classes absent from both
    are left out, as above), accuracy 100 on k and 0 on the others, and aAcc n_k / N. So
    ``chance_mIoU`` = 100 n_k / (N C), ``chance_mAcc`` = 100 / C, ``chance_aAcc`` = 100 n_k / N, C the
    classes present. Empty when the split has no labelled pixel."""
    present = label_area > 0
    if not present.any():
        return {}
    top, total, classes = float(label_area.max()), float(label_area.sum()), int(present.sum())
    return {"chance_mIoU": 100 * top / total / classes, "chance_mAcc": 100 / classes, "chance_aAcc": 100 * top / total}


@DET_METRICS.register_module(force=True)
class KDCocoMetric(CocoMetric):
    """COCO bbox AP items from pycocotools' own stats, unrounded, in percent, and each category's AP
    by name (``per_class``: ``category_ap``; mmdet's ``classwise`` table, unrounded). ``evaluated_only``:
    over the images evaluated, not every image of ``ann_file`` (a held-out share of the training
    set, whose annotations are the training set's file)."""

    def __init__(self, *args, evaluated_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluated_only = evaluated_only

    def compute_metrics(self, results: list) -> dict[str, float]:
        import mmdet.evaluation.metrics.coco_metric as coco_module

        if self.evaluated_only:   # CocoMetric evaluates self.img_ids, else every image of the file
            self.img_ids = sorted({prediction["img_id"] for _, prediction in results})

        recorded: list = []
        recorded_classes: list = []
        original = coco_module.COCOeval

        class RecordingCOCOeval(original):
            def summarize(self):
                super().summarize()
                recorded.append(np.array(self.stats, dtype=np.float64))
                names = [category["name"] for category in self.cocoGt.loadCats(self.params.catIds)]
                recorded_classes.append(class_values(names, AP=category_ap(self.eval["precision"])))

        coco_module.COCOeval = RecordingCOCOeval
        try:
            rounded = super().compute_metrics(results)
        finally:
            coco_module.COCOeval = original
        if not recorded:  # no detections at all: pycocotools never ran
            if "bbox" not in self.metrics:
                return rounded
            return {**{f"bbox_{item}": 0.0 for item in COCO_ITEMS}, PER_CLASS: self._nothing_found()}
        stats = recorded[-1]
        # pycocotools writes -1 where an item has no ground truth (e.g. no large objects): that
        # is "not applicable", not a score, so the item is left out.
        out: dict = {f"bbox_{item}": float(stats[index] * 100) for index, item in enumerate(COCO_ITEMS)
                     if stats[index] >= 0}
        out[PER_CLASS] = recorded_classes[-1]
        return out

    def _nothing_found(self) -> dict:
        """Each category's AP without a single detection: 0 where it has ground truth in the images
        evaluated, None where it has none (as pycocotools would give)."""
        api, images = self._coco_api, self.img_ids
        names = [category["name"] for category in api.loadCats(self.cat_ids)]
        return class_values(names, AP=[0.0 if api.getAnnIds(imgIds=images, catIds=[c]) else math.nan
                                       for c in self.cat_ids])


def category_ap(precision: np.ndarray) -> np.ndarray:
    """Each category's AP from COCOeval's ``eval["precision"]`` (IoU thresholds x recall points x
    categories x area ranges x max detections): the mean over IoU thresholds and recall points, all
    areas, the most detections (as mmdet's classwise table); NaN where the category has no ground
    truth in the images evaluated (pycocotools' -1)."""
    values = np.asarray(precision, dtype=np.float64)[:, :, :, 0, -1]
    kept = np.where(values > -1, values, np.nan)
    with np.errstate(invalid="ignore"):
        counts = np.sum(np.isfinite(kept), axis=(0, 1))
        sums = np.nansum(kept, axis=(0, 1))
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
