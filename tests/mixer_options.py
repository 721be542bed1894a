"""Options under which the conformance suite builds each mixer.

Defaults of some mixers (block sizes of 64, windows of 512, ...) would make a length-67 test
sequence fit in one block and leave the interesting code paths unexercised; entries here shrink
them so that every fast path (blocks, chunks, windows, random features) runs at small lengths.
A mixer missing here is built with its defaults.
"""

D_MODEL = 32
NUM_HEADS = 2

# One line per mixer: edit only your own line.
OPTIONS: dict[str, dict] = {
    "softmax": {"rope": True},
    "softmax_naive": {"rope": True},
    # sparse attention
    "local": {"window": 8, "rope": True},
    "bigbird": {"block_size": 4, "num_random_blocks": 1, "rope": True},
    "hypercube": {"block_size": 4, "rope": True},
    "block_sparse": {"block_size": 4, "local_blocks": 1, "global_blocks": 1, "rope": True},
    # low-rank / gated
    "linformer": {"k": 16, "max_len": 128},
    "transformer_ls": {"window": 16, "rank": 4, "chunk_size": 8, "rope": True},
    "flash": {"chunk_size": 16, "qk_dim": 8},
    "kgv": {"rope": True},
    "evolving": {"rope": True, "alpha": 0.5, "beta": 0.3},
    # kernel / linear
    "linear": {"chunk_size": 16, "rope": True},
    "performer": {"chunk_size": 16, "num_features": 24, "redraw_interval": 1, "rope": True},
    "mgk": {"rope": True},
    "mlk": {"chunk_size": 16, "rope": True},
    # state spaces
    "s4": {"d_state": 8, "chunk_size": 16, "l_max": 32},
    "s4d": {"d_state": 16, "init": "inv"},
    "dss": {"d_state": 8},
    "s5": {"d_state": 16, "blocks": 2, "chunk_size": 8},
    "h3": {"d_state": 8, "head_dim": 4, "chunk_size": 16},
    "gss": {"d_state": 8, "expand": 2},
    "spade": {"window": 8, "rope": True, "ssm_options": {"d_state": 8, "chunk_size": 16, "l_max": 32}},
    # research mixers that change attention itself (README: "Training regimes")
    "si_attention": {"rope": True},
    "treeformer_tc": {"depth": 3},
    "treeformer_tf": {"depth": 3, "block_size": 8},
    "espa": {"init": "espa", "layer_index": 2, "n_layers": 4, "max_len": 128},
    # spectral
    "fno": {"modes": 8},
    # stack RNNs
    "lstm": {"hidden_size": 16},
    "superposition_stack": {"hidden_size": 16, "stack_size": 4},
    "ns_rnn": {"hidden_size": 16, "num_states": 2, "stack_symbols": 2, "window": 12},
    "rns_rnn": {"hidden_size": 16, "num_states": 2, "stack_symbols": 2, "window": 12},
    "onlstm": {"hidden_size": 16, "chunk_size": 4},
    "structformer": {"conv_size": 3, "parser_layers": 2},
    # graph recurrent network
    "grn": {"steps": 3, "window": 2},
}


def options_for(name: str) -> dict:
    return dict(OPTIONS.get(name, {}))


def heads_for(name: str) -> int:
    """NUM_HEADS for mixers with attention heads, 1 for the others (MixerSpec.heads)."""
    import longseq

    return longseq.mixers.heads_for(name, NUM_HEADS)
