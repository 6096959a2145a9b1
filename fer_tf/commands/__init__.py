"""One module per `fer-tf` subcommand; each defines ``register(subparsers)`` and imports lazily."""
