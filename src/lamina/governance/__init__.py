"""Governance: encryption at rest, access roles, audit trail."""
