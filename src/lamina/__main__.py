"""`python -m lamina ...`: the CLI, e.g. under a user's own `torchrun -m lamina train recipe.yaml`."""

from lamina.cli import main

main()
