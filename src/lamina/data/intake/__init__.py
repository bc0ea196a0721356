"""Intake: raw sources -> a masked, deduplicated, versioned dataset."""
