"""Errors pbe_core raises for bad user input; each message says what was wrong and what to do."""


class CheckpointError(ValueError):
    """A model file or folder that cannot be read as a Paint-by-Example model."""
