"""Command-line interface: a thin layer over the Python API.

Every command exits non-zero with a one-line ``turndiff: error: ...`` on bad input (no
traceback); set ``TURNDIFF_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..errors import TurnDiffError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="turndiff")
def cli() -> None:
    """TurnDiff: self-supervised low-dose CT reconstruction from projection data.

    \b
    Typical use:
      turndiff simulate phantom:16 --out scan.h5 --dose-fraction 0.25
      turndiff fbp scan.h5 --out fbp.nii.gz
    """


def _register() -> None:
    from . import data  # noqa: F401  (commands register themselves on `cli`)

    for optional in ("stage1_cmds", "model_cmds", "bench_cmds"):
        try:
            __import__(f"{__name__}.{optional}")
        except ModuleNotFoundError as e:  # pragma: no cover - commands not built yet
            if e.name != f"{__name__}.{optional}":
                raise


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class _Terminated(BaseException):
    """SIGTERM (sent by ``timeout``, Slurm, docker stop) turned into an exception, so that
    every ``atomic_output`` removes its temporary output on the way out."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``turndiff`` executable."""
    import signal

    _register()
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave the handler alone
        pass
    try:
        rv = cli.main(args=argv, prog_name="turndiff", standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        # One line, like every other error; the command's --help has the usage.
        where = f"turndiff {e.ctx.command_path.split(' ', 1)[1]}" if e.ctx and " " in e.ctx.command_path else "turndiff"
        click.echo(f"turndiff: error: {_one_line(e.format_message())} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"turndiff: error: {_one_line(e.format_message())}", err=True)
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("turndiff: aborted", err=True)
        sys.exit(130)
    except _Terminated:
        click.echo("turndiff: terminated; no partial output was left", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("turndiff: interrupted", err=True)
        sys.exit(130)
    except (TurnDiffError, ValueError, OSError, MemoryError) as e:
        if os.environ.get("TURNDIFF_DEBUG"):
            raise
        click.echo(f"turndiff: error: {_one_line(e)}", err=True)
        sys.exit(2)
