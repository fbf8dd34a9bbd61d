"""loctest's built-in plugins. They register through the ``loctest`` entry-point group like any other plugin."""
from loctest import hookimpl

from .backends.nnsight import NNsightBackend
from .backends.transformer_lens import TransformerLensBackend
from .datasets.table import Table
from .datasets.truthfulqa import TruthfulQABinary
from .editors.zero_ablation import ZeroAblation
from .locators.random import RandomLocator
from .scorers.binary_choice import BinaryChoice


@hookimpl
def register_backends(register):
    register(TransformerLensBackend)
    register(NNsightBackend)


@hookimpl
def register_datasets(register):
    register(TruthfulQABinary)
    register(Table)


@hookimpl
def register_locators(register):
    register(RandomLocator)


@hookimpl
def register_editors(register):
    register(ZeroAblation)


@hookimpl
def register_scorers(register):
    register(BinaryChoice)
