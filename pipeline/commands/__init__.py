"""Subcommands of the ``marco`` command line, one module per group."""
