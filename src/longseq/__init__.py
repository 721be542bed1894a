"""longseq: efficient long-sequence token mixers behind one interface, with models, tasks and benchmarks."""

# structured and operators register their model classes (HMM LM, FNO, ...) on import, so that
# longseq.load restores every saved model kind after `import longseq`
from . import mixers, models, operators, structured, tasks
from ._version import __version__
from .mixers import set_debug
from .models import load

__all__ = ["mixers", "models", "operators", "structured", "tasks", "load", "set_debug", "__version__"]
