"""What the tests share: model builders, oracles, runtimes, servers and tools. Imported as
`helpers.<module>` (tests/conftest.py puts tests/ on the path)."""
