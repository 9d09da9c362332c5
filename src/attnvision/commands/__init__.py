"""The ``attnvision`` sub-commands: each module registers its arguments and does the work;
cli.py builds the parser from them and reports the results."""
