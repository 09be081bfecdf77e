"""Benchmarks and fault injection, run as modules from the repository root (`python -m scripts.bench`,
`python -m scripts.faults`). They share the tests' plumbing and fakes (`tests.support`, `tests.fakes`,
`tests.faults`) rather than keeping copies."""
