"""Projections of the ledger (the Redis read model and availability messages) - next issue."""
