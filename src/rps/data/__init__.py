"""Data: sources, extraction, the quality gate, transformation, storage and versioning."""
