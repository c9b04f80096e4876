"""The Falco relay: falcosidekick's webhook → aggregated messages, digests and mutes."""
