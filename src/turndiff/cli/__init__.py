"""Command-line interface: a thin layer over the Python API.

Every command exits non-zero with a one-line ``turndiff: error: ...`` on bad input (no
traceback); set ``TURNDIFF_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from .. import __version__
from ..errors import TurnDiffError

__all__ = ["cli", "main"]


#: Commands that run as several processes under torchrun (docs/DISTRIBUTED.md).
DISTRIBUTED_COMMANDS = ("fit", "reconstruct")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="turndiff")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """TurnDiff: self-supervised low-dose CT reconstruction from projection data.

    \b
    Typical use:
      turndiff simulate phantom:16 --out scan.h5 --dose-fraction 0.25
      turndiff fbp scan.h5 --out fbp.nii.gz
      torchrun --nproc_per_node 4 -m turndiff fit scan.h5 --out model   (several GPUs)
    """
    # Read here without importing turndiff.distributed (torch) so light commands stay light.
    several = os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1", "0")
    if several and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise click.ClickException(
            f"'{ctx.invoked_subcommand}' runs as one process; under torchrun only "
            f"{' and '.join(DISTRIBUTED_COMMANDS)} do (WORLD_SIZE={os.environ['WORLD_SIZE']})")


def _register() -> None:
    from . import data, helical_cmds  # noqa: F401  (commands register themselves on `cli`)

    for optional in ("stage1_cmds", "model_cmds", "bench_cmds"):
        try:
            __import__(f"{__name__}.{optional}")
        except ModuleNotFoundError as e:  # pragma: no cover - commands not built yet
            if e.name != f"{__name__}.{optional}":
                raise


def _resume_hint() -> str:
    """Where an interrupted resumable command keeps its work, if it claimed a run folder."""
    runs = sys.modules.get("turndiff.io.runs")
    claimed = runs.claimed_run_dirs() if runs is not None else []
    existing = [d for d in claimed if d.is_dir()]
    return f"; rerun the same command to resume from {existing[-1]}" if existing else ""


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class _Terminated(BaseException):
    """SIGTERM (sent by ``timeout``, Slurm, docker stop) or SIGINT (Ctrl-C) turned into an
    exception, so that every ``atomic_output`` removes its temporary output on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Signals received during this command. A library may swallow the exception raised in
#: the handler (h5py does, inside its C callbacks); the command still exits non-zero.
_SIGNALLED: list[int] = []


def _on_signal(signum, frame) -> None:
    _SIGNALLED.append(signum)
    raise _Terminated(signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``turndiff`` executable."""
    _register()
    _SIGNALLED.clear()
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread (embedded use): leave the handlers alone
        pass
    try:
        _run(argv)
    finally:  # embedded use (tests, notebooks): give the caller its handlers back
        dist = sys.modules.get("turndiff.distributed")
        if dist is not None:
            dist.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: list[str] | None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="turndiff", standalone_mode=False)
        if _SIGNALLED:  # the exception was swallowed on the way: still report the signal
            raise _Terminated(_SIGNALLED[0])
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
    except _Terminated as e:
        name = "interrupted" if e.signum == signal.SIGINT else "terminated"
        click.echo(f"turndiff: {name}; no partial output was left{_resume_hint()}", err=True)
        sys.exit(128 + int(e.signum))
    except KeyboardInterrupt:
        click.echo("turndiff: interrupted", err=True)
        sys.exit(130)
    except (TurnDiffError, ValueError, OSError, MemoryError) as e:
        if _SIGNALLED:  # a library turned the signal into its own error
            click.echo(f"turndiff: interrupted; no partial output was left{_resume_hint()}", err=True)
            sys.exit(128 + _SIGNALLED[0])
        if os.environ.get("TURNDIFF_DEBUG"):
            raise
        click.echo(f"turndiff: error: {_one_line(e)}", err=True)
        sys.exit(2)
