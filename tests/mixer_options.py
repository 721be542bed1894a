"""Options under which the conformance suite builds each mixer.

Defaults of some mixers (block sizes of 64, windows of 512, ...) would make a length-67 test
sequence fit in one block and leave the interesting code paths unexercised; entries here shrink
them so that every fast path (blocks, chunks, windows, random features) runs at small lengths.
A mixer missing here is built with its defaults.
"""

D_MODEL = 32
NUM_HEADS = 2

OPTIONS: dict[str, dict] = {
    "softmax": {"rope": True},
    "softmax_naive": {"rope": True},
}


def options_for(name: str) -> dict:
    return dict(OPTIONS.get(name, {}))
