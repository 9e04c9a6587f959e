"""One module per `bench` subcommand: NAME, HELP, configure(parser), run(args) -> int."""
