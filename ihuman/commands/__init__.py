"""The `ihuman` subcommands: each module adds its parser (`add`) and runs it (`cmd_*`)."""
