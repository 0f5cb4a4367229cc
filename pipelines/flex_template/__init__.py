"""The Flex Template launcher: template parameters -> settings and a `lakehouse stream|backfill` command line.

Dataflow starts the template's container with every parameter as `--name=value`, followed by its own
pipeline options (`--project`, `--region`, `--temp_location`, `--sdk_container_image`, ...). Here:

- a parameter named like a `pipelines.config.Settings` field (`gcs_bucket`, `silver_dataset`, ...)
  becomes the environment variable `LAKEHOUSE_<NAME>`;
- `command` picks the CLI command (`stream` by default) and a parameter named like one of that command's
  options (`subscription`, `input`, `dims`, ...) becomes that option;
- anything else is a Beam pipeline option and is passed on through the command's `--beam-arg`.

The Dockerfile and metadata.json (the parameters Dataflow accepts) sit next to this file; tests check
that every parameter in metadata.json lands somewhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

COMMANDS = ("stream", "backfill")
SETTINGS_PREFIX = "LAKEHOUSE_"


def _command_options(name: str) -> dict:
    """Option name -> Click option of `lakehouse NAME` (Typer builds the Click command from pipelines.cli)."""
    import typer

    from pipelines.cli import app

    commands = typer.main.get_command(app).commands
    if name not in commands:
        raise SystemExit(f"`lakehouse {name}` does not exist in this package (it has {', '.join(sorted(commands))})")
    return {p.name: p for p in commands[name].params if p.param_type_name == "option"}


def _split(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """`--name=value` / `--name value` / `--flag` -> (name, value or None)."""
    pairs, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise SystemExit(f"unexpected argument {arg!r}: parameters are --name=value")
        name, sep, value = arg[2:].partition("=")
        if not sep and args and not args[0].startswith("--"):
            value, sep = args.pop(0), "="
        pairs.append((name, value if sep else None))
    return pairs


def translate(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(environment variables to set, CLI argv) for the template's argv."""
    from pipelines.config import Settings

    pairs = _split(argv)
    command_name = next((v for k, v in pairs if k == "command"), None) or "stream"
    if command_name not in COMMANDS:
        raise SystemExit(f"--command must be one of {', '.join(COMMANDS)}, got {command_name!r}")
    options = _command_options(command_name)
    if "beam_arg" not in options:
        raise SystemExit(f"`lakehouse {command_name}` takes no --beam-arg: cannot pass Dataflow's options")

    env = {f"{SETTINGS_PREFIX}ENVIRONMENT": "gcp"}
    cli = [command_name]
    for name, value in pairs:
        if name == "command":
            continue
        if name in Settings.model_fields:
            env[f"{SETTINGS_PREFIX}{name.upper()}"] = value or ""
        elif name in options and name != "beam_arg":
            option = options[name]
            if option.is_flag:
                if (value or "true").lower() in ("1", "true", "yes"):
                    cli.append(option.opts[0])
            else:
                cli += [option.opts[0], value or ""]
        else:
            cli.append(f"--beam-arg=--{name}" + (f"={value}" if value is not None else ""))
            if name == "project":
                env.setdefault(f"{SETTINGS_PREFIX}GCP_PROJECT", value or "")
            elif name == "region":
                env.setdefault(f"{SETTINGS_PREFIX}GCP_REGION", value or "")
    if "runner" in options and "runner" not in dict(pairs):
        cli += [options["runner"].opts[0], "DataflowRunner"]
    return env, cli


def main(argv: Sequence[str] | None = None) -> None:
    from pipelines.cli import app

    env, cli = translate(sys.argv[1:] if argv is None else argv)
    os.environ.update(env)
    app(args=cli, prog_name="lakehouse")
