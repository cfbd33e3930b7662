"""The typer application every command module registers onto.

Every command it registers is a ``hydranet.cli.guard.GuardedCommand``: one error convention, outputs
that never overwrite inputs, one writer per output (see ``guard.py``).
"""

import platform
import sys

import torch
import typer

import hydranet
from hydranet.cli.guard import GuardedCommand, GuardedGroup
from hydranet.limits import MAX_IMAGE_PIXELS_DEFAULT

# What every command that reads a trained model takes (``hydranet.checkpoint.resolve_checkpoint`` resolves it).
CHECKPOINT_HELP = ("a checkpoint directory, a run directory (its newest checkpoint) or zoo:NAME (a model shipped "
                   "with hydranet: `hydranet zoo`)")
# The --data forms every command running a model on frames takes (``hydranet.datasets.open_dataset``).
DATA_HELP = ("shards (path or URL), KIND:PATH (e.g. bdd100k:/data/bdd100k, world:my_world.yaml), a source YAML "
             "(with kind:) or a world YAML, or 'synthetic'")
# The --device every command running a model takes (``hydranet.train.resolve_device`` checks it before any work).
DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"


class _HydraTyper(typer.Typer):
    """``typer.Typer`` whose commands are ``GuardedCommand`` unless a command names a subclass of it."""

    def command(self, *args, cls: type[GuardedCommand] | None = None, **kwargs):  # noqa: ANN201 - typer's decorator
        if cls is not None and not issubclass(cls, GuardedCommand):
            raise TypeError(f"hydranet command class {cls.__name__} must subclass GuardedCommand")
        return super().command(*args, cls=cls or GuardedCommand, **kwargs)


app = _HydraTyper(
    cls=GuardedGroup,  # usage errors on one line, like every other error
    # Rich error panels wrap messages inside a box at 80 columns; in logs and pipes print click's
    # plain one-line "Error: ..." instead (hydranet.console does the same for tables).
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
    name="hydranet",
    help="Build, train, evaluate, mine data for and deploy multi-camera multi-task perception networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    max_image_pixels: int = typer.Option(None, "--max-image-pixels", min=1, help="Refuse images whose header "
                                         f"claims more pixels than this (default {MAX_IMAGE_PIXELS_DEFAULT:,}, "
                                         "or HYDRANET_MAX_IMAGE_PIXELS)."),
) -> None:
    """Multi-camera, multi-task perception networks: see each command's --help."""
    # The image limit (this option, else HYDRANET_MAX_IMAGE_PIXELS) is applied by the command that runs, inside its
    # guard (hydranet.cli.guard): read here, a bad variable refused `hydranet CMD --help` too, which never gets there.


@app.command()
def version() -> None:
    """Print the hydranet, torch and Python versions."""
    typer.echo(f"hydranet {hydranet.__version__}  torch {torch.__version__}  python {platform.python_version()}")
