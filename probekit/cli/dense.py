"""Dense probing commands: build mosaics and warped pairs, segment and correspond per cell, compare dense runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from probekit.cli.common import add_data_args, load_data, memory_budget
from probekit.core.errors import ProbekitError


def cmd_mosaic(args: argparse.Namespace) -> None:
    from probekit.data.segmentation import write_fashion_mosaic

    dataset = load_data(args)
    out = write_fashion_mosaic(
        dataset,
        args.out,
        counts={"train": args.train, "val": args.val, "test": args.test},
        tile=args.tile,
        seed=args.seed,
    )
    print(
        f"wrote {out} ({args.train} train, {args.val} val, {args.test} test mosaics of {2 * args.tile}x{2 * args.tile} "
        "pixels)"
    )


def cmd_pairs(args: argparse.Namespace) -> None:
    from probekit.data import pairs

    sources = [
        name
        for name, value in (("--warp", args.warp), ("--spair", args.spair), ("--pf-pascal", args.pf_pascal))
        if value
    ]
    if len(sources) != 1:
        raise ProbekitError("give exactly one of --warp DATA, --spair ROOT or --pf-pascal ROOT")
    if args.warp:
        from probekit.data import load_dataset

        out = pairs.write_warp_pairs(
            load_dataset(args.warp, download=not args.no_download),
            args.out,
            counts={"val": args.val, "test": args.test},
            keypoints=args.keypoints,
            rotation=args.rotation,
            scale=args.scale,
            shift=args.shift,
            seed=args.seed,
        )
    elif args.spair:
        out = pairs.convert_spair(args.spair, args.out, limit=args.limit)
    else:
        out = pairs.convert_pf_pascal(args.pf_pascal, args.out, limit=args.limit)
    print(f"wrote {out} (extract it with --pooling spatialS, then `probekit correspond --data {out}`)")


def cmd_segment(args: argparse.Namespace) -> None:
    from probekit.analyses.dense.segment import SegmentConfig, segment_cache
    from probekit.evaluate.dense_sidecar import write_dense_sidecar
    from probekit.evaluate.results import format_summary, write_table

    config = SegmentConfig(
        pixels_per_image=args.pixels_per_image, val_fraction=args.val_fraction, C=args.C, seed=args.seed
    )
    results = segment_cache(args.cache, args.data, config, max_memory=memory_budget(args.max_memory))
    write_table(results.table, args.out)
    sidecar = write_dense_sidecar(args.out, results.table, "confusion", results.test_confusions, results.test_index)
    print(format_summary(results.table, metric="miou"))
    print(f"wrote {args.out} and {sidecar}")


def cmd_correspond(args: argparse.Namespace) -> None:
    from probekit.analyses.dense.correspond import CorrespondConfig, correspond_cache
    from probekit.evaluate.dense_sidecar import write_dense_sidecar
    from probekit.evaluate.results import format_summary, write_table

    results = correspond_cache(args.cache, args.data, CorrespondConfig(alpha=args.alpha))
    write_table(results.table, args.out)
    sidecar = write_dense_sidecar(args.out, results.table, "pck", results.test_counts, results.test_pairs)
    print(format_summary(results.table, metric="pck"))
    print(f"wrote {args.out} and {sidecar}")


def cmd_dense_compare(args: argparse.Namespace) -> None:
    from probekit.evaluate.dense_sidecar import compare_dense, format_dense_comparison

    comparison = compare_dense(args.results[0], args.results[1], n_boot=args.n_boot, seed=args.seed)
    print(format_dense_comparison(comparison, *(Path(p).stem for p in args.results)))


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    p = sub.add_parser(
        "mosaic",
        help="write a segmentation folder of 2 x 2 Fashion-MNIST mosaics (garment class per "
        "tile foreground, background elsewhere)",
    )
    add_data_args(
        p,
        required=False,
        default="fashion-mnist",
        limits=(),
        data_help="grayscale dataset the garments come from (default fashion-mnist)",
    )
    p.add_argument("--out", required=True, help="folder to write (images/, masks/, classes.txt)")
    p.add_argument("--train", type=int, default=400, help="train mosaics (default 400)")
    p.add_argument("--val", type=int, default=100, help="val mosaics (default 100)")
    p.add_argument("--test", type=int, default=200, help="test mosaics (default 200)")
    p.add_argument("--tile", type=int, default=16, help="tile side in pixels; a mosaic is 2 x tile wide (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the garment draws and placements (default 0)")
    p.set_defaults(run=cmd_mosaic)

    p = sub.add_parser(
        "pairs",
        help="write a keypoint pair folder: random affine warps of a dataset's images (exact "
        "ground truth), or SPair-71k / PF-Pascal annotations",
    )
    p.add_argument("--out", required=True, help="pair folder to write (images/{val,test}/, pairs.npz)")
    p.add_argument(
        "--warp",
        metavar="DATA",
        help="grayscale dataset to warp: val pairs from its train split, test from its test split",
    )
    p.add_argument("--spair", metavar="ROOT", help="SPair-71k folder (PairAnnotation/, JPEGImages/)")
    p.add_argument("--pf-pascal", metavar="ROOT", help="PF-dataset-PASCAL folder with {val,test}_pairs_pf_pascal.csv")
    p.add_argument("--val", type=int, default=100, help="--warp: val pairs (default 100)")
    p.add_argument("--test", type=int, default=200, help="--warp: test pairs (default 200)")
    p.add_argument("--keypoints", type=int, default=8, help="--warp: keypoints per pair, on the foreground (default 8)")
    p.add_argument("--rotation", type=float, default=15.0, help="--warp: rotation range, +- degrees (default 15)")
    p.add_argument("--scale", type=float, default=0.1, help="--warp: scale range 1 +- this (default 0.1)")
    p.add_argument(
        "--shift", type=float, default=0.1, help="--warp: translation range, +- this x image side (default 0.1)"
    )
    p.add_argument("--limit", type=int, help="--spair / --pf-pascal: the first N pairs of each split")
    p.add_argument("--seed", type=int, default=0, help="seed of the warps and keypoints (default 0)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    p.set_defaults(run=cmd_pairs)

    p = sub.add_parser(
        "segment",
        help="per-pixel linear segmentation on every cell of a spatial cache (mIoU, pixel accuracy), chosen on val",
    )
    p.add_argument("--cache", required=True, help="cache extracted with --pooling spatialS from a segmentation folder")
    p.add_argument(
        "--data", required=True, help="the segmentation folder (images/, masks/, classes.txt) it was extracted from"
    )
    p.add_argument(
        "--out", required=True, help="results CSV; per-test-image confusion matrices go beside it (OUT.dense.npz)"
    )
    p.add_argument(
        "--pixels-per-image", type=int, default=64, help="labelled train pixels drawn per image (default 64)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of train images held out when the cache has no val split"
    )
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the linear probe (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel draws and the validation split (default 0)")
    p.add_argument("--max-memory", default="auto", help="feature memory budget; cells are processed in groups that fit")
    p.set_defaults(run=cmd_segment)

    p = sub.add_parser(
        "correspond",
        help="keypoint correspondence PCK@alpha (DIFT's definition) on every cell of a "
        "spatial cache, chosen on val pairs",
    )
    p.add_argument("--cache", required=True, help="cache extracted with --pooling spatialS from a pair folder")
    p.add_argument("--data", required=True, help="the pair folder it was extracted from")
    p.add_argument("--out", required=True, help="results CSV; per-test-pair counts go beside it (OUT.dense.npz)")
    p.add_argument("--alpha", type=float, default=0.1, help="PCK threshold as a share of max(box h, w) (default 0.1)")
    p.set_defaults(run=cmd_correspond)

    p = sub.add_parser(
        "dense-compare",
        help="paired bootstrap of two segment / correspond runs on the same test "
        "images or pairs, at their val-chosen cells",
    )
    p.add_argument(
        "--results", required=True, nargs=2, metavar=("A", "B"), help="two results CSVs (each with OUT.dense.npz)"
    )
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(run=cmd_dense_compare)
