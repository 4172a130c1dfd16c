"""The application layer: named operations over the domain and the ledger, free of HTTP.

`commands` runs jobs (group commit, idempotency records in the same transaction as the
effect) and returns typed results; `tokens`, `integrations` and `order_sync` hold the
decisions that are not domain commands; `queries` reads the read model; `sweeper` and
`demo` are operations the workers and the CLI run.
"""
