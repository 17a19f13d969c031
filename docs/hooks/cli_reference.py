"""mkdocs hook: the command-line reference page, generated from probekit's argument parser at build
time (``reference/cli.md`` has no file on disk), so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PAGE = "reference/cli.md"


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{flag}`" for flag in action.option_strings)


def _default(action: argparse.Action) -> str:
    if (
        action.required
        or action.default in (None, False, argparse.SUPPRESS)
        or isinstance(action, argparse._StoreTrueAction)
    ):
        return ""
    return f"`{action.default}`" if not isinstance(action.default, list) else f"`{','.join(map(str, action.default))}`"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").replace("%%", "%")


def render(parser: argparse.ArgumentParser) -> str:
    """Markdown: every command with its help, usage and one table row per option."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    lines = [
        "# Command line",
        "",
        "Generated from `probekit.cli.build_parser()` when the site is built. Every command prints one-line "
        "errors (`probekit: error: ...`, exit code 2) and accepts `--debug` before the command for a full "
        "traceback.",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    lines += [f"| [`{name}`](#{name}) | {_cell(helps.get(name))} |" for name in sub.choices]
    for name, command in sub.choices.items():
        usage = command.format_usage().replace("usage: ", "").strip()
        lines += [
            "",
            f"## {name}",
            "",
            _cell(helps.get(name)),
            "",
            "```",
            usage,
            "```",
            "",
            "| option | required | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            choices = f" (one of: {', '.join(map(str, action.choices))})" if action.choices else ""
            lines.append(
                f"| {_flags(action)} | {'yes' if action.required else ''} | {_default(action)} | "
                f"{_cell(action.help)}{choices} |"
            )
    return "\n".join(lines) + "\n"


def render_settings() -> str:
    """Markdown: the settings of `probekit run`, from the fields of its config dataclass."""
    from probekit.core.settings import markdown_table
    from probekit.pipeline import RunConfig

    return "\n".join(
        [
            "",
            "## Settings of `probekit run`",
            "",
            "Each is a key of the `--config` YAML file (underscores or dashes) and a flag; flags given override "
            "the file. Generated from the fields of `probekit.pipeline.RunConfig`; a key that is not one of "
            "these is refused, naming the closest.",
            "",
            markdown_table(RunConfig),
        ]
    )


def on_files(files: Files, config) -> Files:  # noqa: ANN001 -- mkdocs' hook signature
    sys.path.insert(0, str(ROOT))
    from probekit.cli import build_parser

    files.append(File.generated(config, PAGE, content=render(build_parser()) + render_settings()))
    return files
