"""``python -m serve --model ARTIFACT``: same as ``distill serve``."""

from .cli import main

main()
