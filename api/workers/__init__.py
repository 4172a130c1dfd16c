"""Long-running worker processes started by the CLI (api.cli): the webhook consumer and
the order poller. Each asks the composition root (api.bootstrap) for what it needs."""
