"""Token mixers behind one interface: ``names()``, ``spec(name)``, ``build(name, d_model, ...)``.

Each module of this package holds one method family and registers its mixers with
:func:`register`; modules are discovered automatically, so adding a mixer is one file.
"""

from .base import Mixer, MixerSpec, build, debug_enabled, names, register, set_debug, spec

__all__ = ["Mixer", "MixerSpec", "build", "names", "register", "spec", "set_debug", "debug_enabled"]
