"""A real local provider server for tests, benchmarks and the demo."""
