"""atp: the pure inventory domain (commands, events, state, the ATS rules).

Nothing in this package does I/O or imports a framework or driver.
"""
