"""Adapters: everything that talks to storage and the outside world."""
