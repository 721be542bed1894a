"""Subcommands of the ``longseq`` CLI, one module each (see ``longseq.cli``)."""
