"""The `enrichd` subcommands, one module per area; `cli.py` parses the arguments and calls them."""
