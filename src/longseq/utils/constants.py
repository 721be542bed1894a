"""Constants shared across layers (tasks produce them, models and the trainer consume them)."""

# Target value at positions that carry no loss (the ``ignore_index`` of ``F.cross_entropy``).
IGNORE = -100
