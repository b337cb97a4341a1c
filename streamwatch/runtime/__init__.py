"""Shells around the engine: Kafka (the service) and files (replay and backfill)."""
