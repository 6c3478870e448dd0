"""The ``zerolabel`` command line."""
