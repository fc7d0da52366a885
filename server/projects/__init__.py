"""Projects (landmark model lines) and their append-only landmark sets (steps)."""
