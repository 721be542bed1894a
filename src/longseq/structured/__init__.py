"""Structured latent-variable models with exact dynamic-programming inference.

* :class:`HMM` — neural HMM (Chiu & Rush 2020), full rank or low rank (Chiu, Deng & Rush 2021).
* :class:`HMMLanguageModel` — the HMM behind the ``CausalLM`` interface (trainer, ``--model hmm``).
"""

from .hmm import HMM
from .lm import HMMLanguageModel, build_hmm_lm

__all__ = ["HMM", "HMMLanguageModel", "build_hmm_lm"]
