"""``python -m export ...`` (the same commands as ``distill export ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
