"""The commands `probekit run` prints are CLI lines a user can run alone: parsed by the real
parser, they give the settings the run was planned with; and a run's settings round-trip
through the flags generated from RunConfig.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import yaml

from probekit.cli import build_parser
from probekit.cli.features import EXTRACT_FIELDS_WITHOUT_FLAG, extract_config
from probekit.core.settings import to_argv
from probekit.features.extraction import ExtractConfig
from probekit.pipeline import STEPS, RunConfig, RunPaths, format_command

ROOT = Path(__file__).resolve().parents[2]

CONFIG = RunConfig(
    model="ckpt/m",
    data="fashion-mnist",
    out="o",
    name="m",
    cache_dir="c",
    timesteps=[0, 50, 200],
    layers="0,2,-1",
    train_limit=300,
    test_limit=100,
    seed=3,
    batch_size=16,
    precision="fp32",
    device="cpu",
    probes=["linear", "knn", "logreg"],
    k=[5, 10],
    C=[0.1, 1.0],
    random_init_timesteps=[0, 10],
    dense=True,
    dense_timesteps=[0],
    dense_layers="a,b",
    dense_side=4,
    label_efficiency=True,
    labels_per_class="1,all",
    label_timesteps=[0],
    images=["s p.png", "t.png"],
    x="t",
    n_boot=200,
    no_download=True,
    title="a title",
)


def _printed_lines() -> list[tuple[str, list[str]]]:
    paths = RunPaths(out=Path("o"), caches=Path("c"), label="m")
    return [
        (step.name, shlex.split(format_command(argv))[1:])
        for step in STEPS
        if (plan := step.plan(CONFIG, paths)) is not None
        for argv in plan.commands
    ]


def test_run_settings_round_trip_through_the_generated_flags():
    args = build_parser().parse_args(["run", *to_argv(CONFIG)])
    assert RunConfig.from_args(args) == CONFIG


def test_every_printed_command_parses_with_the_real_parser():
    lines = _printed_lines()
    assert {argv[0] for _, argv in lines} >= {"extract", "probe", "plot", "compare", "segment", "report"}
    parser = build_parser()
    for _, argv in lines:
        assert parser.parse_args(argv).command == argv[0]


def test_printed_extractions_give_the_extract_config_the_run_was_planned_with():
    parser = build_parser()
    seen = 0
    for step, argv in _printed_lines():
        if argv[0] != "extract":
            continue
        args = parser.parse_args(argv)
        config = extract_config(args)
        assert (config.seed, config.batch_size) == (3, 16)
        if "--model" in argv and args.model == "pixels":
            continue
        twin = "random-init" in step
        expected = replace(
            ExtractConfig(),
            timesteps=[0, 10] if twin else [0] if "mosaics" in step or "pairs" in step else [0, 50, 200],
            layers="a,b" if "mosaics" in step or "pairs" in step else "0,2,-1",
            seed=3,
            batch_size=16,
            precision="fp32",
            pooling="spatial4" if "mosaics" in step or "pairs" in step else "gap",
        )
        assert config == expected, step
        assert args.random_init == twin and args.device == "cpu"
        seen += 1
    assert seen == 6  # model, twin, and both for the mosaics and the pairs


def test_printed_probes_carry_the_run_s_probe_settings():
    parser = build_parser()
    (model,) = [argv for step, argv in _printed_lines() if step == "probe model"]
    args = parser.parse_args(model)
    assert (args.probes, args.k, args.C, args.seed, args.device) == (
        "linear,knn,logreg",
        [5, 10],
        [0.1, 1.0],
        3,
        "cpu",
    )


def test_every_extract_config_field_has_a_flag():
    flags = {action.dest for action in build_parser()._subparsers._group_actions[0].choices["extract"]._actions}
    readers = {"store_latents": "no_latent_cache"}
    for name in ExtractConfig.__dataclass_fields__:
        assert name in EXTRACT_FIELDS_WITHOUT_FLAG or readers.get(name, name) in flags, name


def test_the_main_job_s_yaml_gives_its_written_settings():
    path = ROOT / "experiments" / "demo.yaml"
    written = yaml.safe_load(path.read_text())
    config = RunConfig.from_sources(str(path), {})
    assert config.timesteps == written["timesteps"] and config.k == written["k"]
    assert config.labels_per_class == ",".join(str(v) for v in written["labels_per_class"])
    assert (config.dense, config.precision, config.cache_dir) == (True, "fp32", "out/demo")
