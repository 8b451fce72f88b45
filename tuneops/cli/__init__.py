"""The ``tuneops`` command line."""
