"""`python -m lamina.cli`: the same command line as `lamina`."""

from lamina.cli import main

main()
