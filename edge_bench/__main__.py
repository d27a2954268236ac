"""``python -m edge_bench`` = ``distill bench``."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="python -m edge_bench")
