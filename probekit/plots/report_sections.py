"""The report's dense-probe and label-efficiency sections (HTML), from the rows of ``report_tables``."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from probekit.plots.report_tables import (
    dense_comparison_rows,
    dense_rows,
    dense_vs_global,
    label_rows,
    table_html,
)


def dense_section(tables: dict[Path, pd.DataFrame], n_boot: int) -> str:
    """Each dense run's val-chosen cell, the paired comparisons of each task, where the global cell scores."""
    dense = dense_rows(tables)
    if not dense:
        return ""
    parts = [
        "<h2>Dense probes</h2>",
        "<p class=note>Per-pixel linear segmentation (mIoU) and keypoint correspondence (PCK) of every "
        "(t, layer) cell's feature map; the cell is chosen on val and scored on test.</p>",
        table_html(
            ["task", "model", "val-chosen cell", "metric", "val %", "test %", "test, other metric %"],
            dense,
            numeric=(4, 5),
        ),
    ]
    comparisons = dense_comparison_rows(tables, n_boot)
    if comparisons:
        parts += [
            "<p class=note>Paired bootstrap 95 % interval over the same test images or pairs "
            "(<code>probekit dense-compare</code>).</p>",
            table_html(
                ["task", "A", "B", "A %", "B %", "A − B (points)", "95 % interval"], comparisons, numeric=(3, 4, 5)
            ),
        ]
    sentence = dense_vs_global(tables)
    if sentence:
        parts.append(f"<p>{html.escape(sentence)}</p>")
    return "\n".join(parts)


def label_section(tables: dict[Path, pd.DataFrame]) -> str:
    """Label efficiency: per model and budget, the val-chosen cell's test top-1 over draws."""
    labels = label_rows(tables)
    if not labels:
        return ""
    return "\n".join(
        [
            "<h2>Label efficiency</h2>",
            "<p class=note>Linear probes fitted on k labelled train images per class (seeded draws); the cell "
            "is chosen on the same val split for every draw and scored on the same test images.</p>",
            table_html(
                [
                    "model",
                    "labels per class",
                    "fit images",
                    "draws",
                    "test top-1 % (mean)",
                    "min, max over draws",
                    "val-chosen cell of each draw",
                ],
                labels,
                numeric=(2, 3, 4),
            ),
        ]
    )
