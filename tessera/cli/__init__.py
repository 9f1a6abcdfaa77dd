"""The ``tessera`` command line: one command, groups per concern."""
