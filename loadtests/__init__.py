"""Load tests: the reservation benchmark and Locust scenarios for peak retail traffic."""
