"""One module per hma-check subcommand; hma_check.cli imports them lazily."""
