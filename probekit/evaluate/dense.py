"""Dense scores (numpy only): PCK for keypoint correspondence, mIoU and pixel accuracy for segmentation.

PCK follows DIFT's SPair-71k evaluation (``eval_spair.py`` of Tang et al., NeurIPS 2023): a
predicted keypoint is correct when its Euclidean distance to the ground truth, in pixels of the
target image, is at most ``alpha * threshold``, where ``threshold`` is max(height, width) of the
target's bounding box (of the target image where no box is given). Per-pair PCK is the share of a
pair's keypoints that are correct; DIFT reports both its mean over pairs ("per image") and the
share over all keypoints ("per point").

Segmentation scores come from one confusion matrix over every evaluated pixel (pixels labelled
``ignore_index`` are left out, as in PASCAL VOC): IoU_c = TP_c / (TP_c + FP_c + FN_c) for each
class that occurs in the labels or the predictions, mIoU their mean, pixel accuracy the share of
pixels predicted right.
"""

from __future__ import annotations

import numpy as np

from probekit.core.errors import ProbekitError

IGNORE_INDEX = 255


def pck_threshold(bbox: np.ndarray | None, image_hw: tuple[int, int]) -> float:
    """max(h, w) of the box ``[x1, y1, x2, y2]`` (pixels), or of the image (H, W) when ``bbox`` is None."""
    if bbox is None or not np.all(np.isfinite(bbox)):
        return float(max(image_hw))
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return max(y2 - y1, x2 - x1)


def keypoints_correct(predicted_xy: np.ndarray, true_xy: np.ndarray, threshold: float, alpha: float) -> np.ndarray:
    """(K,) bool: ``||predicted - true|| / threshold <= alpha`` for each of K keypoints ((K, 2) as x, y)."""
    predicted_xy, true_xy = np.asarray(predicted_xy, dtype=np.float64), np.asarray(true_xy, dtype=np.float64)
    if predicted_xy.shape != true_xy.shape or predicted_xy.ndim != 2 or predicted_xy.shape[1] != 2:
        raise ProbekitError(
            f"keypoints must be (K, 2) arrays of equal shape, got {predicted_xy.shape} and {true_xy.shape}"
        )
    if not threshold > 0:
        raise ProbekitError(f"PCK threshold must be positive, got {threshold}")
    distance = np.sqrt(((predicted_xy - true_xy) ** 2).sum(axis=1))
    return distance / threshold <= alpha


def confusion_matrix(
    predicted: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted class."""
    predicted, labels = np.asarray(predicted).reshape(-1), np.asarray(labels).reshape(-1)
    if predicted.shape != labels.shape:
        raise ProbekitError(f"predictions and labels differ in size: {predicted.shape} vs {labels.shape}")
    keep = labels != ignore_index
    predicted, labels = predicted[keep].astype(np.int64), labels[keep].astype(np.int64)
    if labels.size and (labels.max() >= num_classes or labels.min() < 0):
        raise ProbekitError(
            f"label {int(labels.max())} outside 0..{num_classes - 1} (and not the ignore index {ignore_index})"
        )
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """``miou`` (over classes present in labels or predictions) and ``pixel_accuracy`` of a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    present = union > 0
    total = confusion.sum()
    if total == 0:
        raise ProbekitError("no labelled pixels to score (every pixel is the ignore index)")
    return {
        "miou": float((true_positive[present] / union[present]).mean()),
        "pixel_accuracy": float(true_positive.sum() / total),
    }
