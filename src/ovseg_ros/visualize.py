"""Colours for people: overlays, and COCO panoptic PNG/JSON files."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def class_colors(num_classes: int) -> np.ndarray:
    """[K, 3] uint8, distinct and stable for a class index (golden-ratio hues)."""
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 179, np.full(num_classes, 200), np.full(num_classes, 230)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def segment_palette(segments: Sequence, num_classes: int, track_ids: Sequence[int] | None = None) -> np.ndarray:
    """[N+1, 3] colour per segment id (0 = black). Instances of a thing class get
    shades of their class colour so neighbours stay apart: by track id when there are
    track ids (an object keeps its shade from frame to frame), else by segment id."""
    palette = np.zeros((len(segments) + 1, 3), dtype=np.uint8)
    if not segments:
        return palette
    colors = class_colors(max(num_classes, 1)).astype(np.int16)
    ids = np.array([s.id for s in segments])
    categories = np.array([s.category for s in segments])
    keys = [s.id for s in segments] if track_ids is None else list(track_ids)
    shade = np.array([((k * 37) % 61 - 30) if s.is_thing else 0 for s, k in zip(segments, keys)], dtype=np.int16)
    palette[ids] = np.clip(colors[categories] + shade[:, None], 0, 255).astype(np.uint8)
    return palette


def boundaries(panoptic: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another segment."""
    edge = np.zeros(panoptic.shape, dtype=bool)
    edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
    edge[:-1, :] |= panoptic[:-1, :] != panoptic[1:, :]
    return edge


def render_overlay(image: np.ndarray, panoptic: np.ndarray, segments: Sequence, num_classes: int, alpha: float = 0.55,
                   labels: bool = True, track_ids: Sequence[int] | None = None) -> np.ndarray:
    """RGB image with segments tinted, outlined, and labelled at their centroids (with
    `track_ids`: shaded by identity and labelled "label #id")."""
    palette = segment_palette(segments, num_classes, track_ids)
    color = palette[np.clip(panoptic, 0, len(palette) - 1)]
    covered = (panoptic > 0)[..., None]
    out = np.where(covered, (image * (1 - alpha) + color * alpha), image).astype(np.uint8)
    out[boundaries(panoptic)] = 255
    if labels:
        scale = max(0.35, min(image.shape[:2]) / 900)
        tracks = track_ids if track_ids is not None else [0] * len(segments)
        for s, track_id in zip(segments, tracks):  # text only; pixels are handled above in one pass
            if s.area == 0:
                continue
            text = f"{s.label} #{track_id}" if track_id and s.is_thing else f"{s.label} {s.score:.2f}"
            x, y = int(s.centroid[0]), int(s.centroid[1])
            cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def panoptic_to_rgb(panoptic: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG encoding: id = R + 256 G + 256^2 B."""
    ids = panoptic.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb_to_panoptic(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]).astype(np.int32)


def coco_panoptic_record(file_name: str, segments: Sequence, vocabulary_labels: Sequence[str]) -> dict:
    """One COCO panoptic annotation; category ids are vocabulary indices, labels included."""
    return {
        "file_name": file_name,
        "segments_info": [
            {
                "id": s.id,
                "category_id": s.category,
                "label": vocabulary_labels[s.category],
                "isthing": s.is_thing,
                "iscrowd": 0,
                "score": round(float(s.score), 6),
                "area": int(s.area),
                "bbox": [int(v) for v in s.bbox],
            }
            for s in segments
        ],
    }
