"""CLI subcommands: one module per feature, each with ``register(app: typer.Typer)``."""
