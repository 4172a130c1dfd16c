"""The HTTP API (Litestar + msgspec), the command service behind it, and the CLI."""
