"""Runtimes: building sessions and running them, one small interface for the server, the
benchmarks and the tests."""
