"""Models: the bundle format, training, evaluation, the registry and its promotion gate."""
