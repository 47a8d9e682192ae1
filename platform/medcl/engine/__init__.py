"""The sequence engine: driver (runner), worker loop, evaluation, checkpoints."""
