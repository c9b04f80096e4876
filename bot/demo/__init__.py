"""A throwaway Synapse on loopback for `readybot demo`, the integration tests and benchmarks."""
