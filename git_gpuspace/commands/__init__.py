"""One module per verb: each `run(args)` orchestrates and returns an exit code."""
