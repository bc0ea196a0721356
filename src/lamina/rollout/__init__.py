"""Staged rollout and its watch: canary and shadow splits kept in the registry, live guards
judged over a window, automatic rollback, monitoring, incident drills."""
