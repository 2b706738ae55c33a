"""The invresilience test suite (a package, so tests can import ``tests.services``)."""
