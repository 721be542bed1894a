"""Structured latent-variable models with exact dynamic-programming inference (models, not mixers).

* :class:`HMM` — neural HMM (Chiu & Rush 2020), full rank or low rank (Chiu, Deng & Rush 2021).
* :class:`HMMLanguageModel` — the HMM behind the ``CausalLM`` interface (trainer, ``--model hmm``).
* :class:`PCFG` — the simple neural PCFG (Kim, Dyer & Rush 2019), full rank or TD-PCFG in rank space
  (Yang, Zhao & Tu 2021; Yang, Liu & Tu 2022).
* :class:`LCFRS2` — binary LCFRS of fan-out 2 with the O(n^5) rule subset (Yang, Levy & Kim 2023).
"""

from .hmm import HMM
from .lcfrs import LCFRS2
from .lm import HMMLanguageModel, build_hmm_lm
from .pcfg import PCFG, bench_pcfg

__all__ = ["HMM", "HMMLanguageModel", "LCFRS2", "PCFG", "bench_pcfg", "build_hmm_lm"]
