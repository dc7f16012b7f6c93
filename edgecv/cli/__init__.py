"""The ``edgecv`` command line: thin Typer commands over the library."""
