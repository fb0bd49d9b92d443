"""The shipped RWM checkpoints (data only; a package so that wheels include them)."""
