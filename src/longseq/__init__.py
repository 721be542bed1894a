"""longseq: efficient long-sequence token mixers behind one interface, with models, tasks and benchmarks."""

from . import mixers

__version__ = "0.1.0"
__all__ = ["mixers"]
