"""Version of the tool and of its JSON report schema (a module of its own so every submodule can import it)."""

__version__ = "0.1.0"
#: Bump when a field of the JSON report changes meaning or disappears (adding fields does not bump it).
SCHEMA_VERSION = 1
