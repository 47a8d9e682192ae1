"""Command groups of the ``medcl`` CLI, one module each: ``register(subparsers)`` adds the group's
parsers and sets ``handler(args) -> int`` on each. Keep imports of heavy libraries inside handlers so
``medcl --help`` stays fast."""
