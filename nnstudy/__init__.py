"""nnstudy: reproducible hyperparameter studies of feed-forward networks, orchestrated by Prefect."""

__version__ = "0.1.0"
