"""longseq: efficient long-sequence token mixers behind one interface, with models, tasks and benchmarks."""

from . import mixers, models, tasks
from ._version import __version__
from .mixers import set_debug
from .models import load

__all__ = ["mixers", "models", "tasks", "load", "set_debug", "__version__"]
