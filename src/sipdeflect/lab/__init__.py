"""Network-namespace lab: throwaway hosts for tests, the demo and benchmarks."""
