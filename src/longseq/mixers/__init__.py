"""Token mixers behind one interface: ``names()``, ``spec(name)``, ``build(name, d_model, ...)``.

Each module of this package holds one method family and registers its mixers with
:func:`register`; modules are discovered automatically, so adding a mixer is one file.
"""

from .base import RENAMED_OPTIONS, Mixer, MixerSpec, build, debug_enabled, heads_for, names, register, set_debug, spec

__all__ = [
    "Mixer",
    "MixerSpec",
    "RENAMED_OPTIONS",
    "build",
    "heads_for",
    "names",
    "register",
    "spec",
    "set_debug",
    "debug_enabled",
]
