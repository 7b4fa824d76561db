"""`python -m greenkd` is the `greenkd` command."""

from greenkd.cli import main

main()
