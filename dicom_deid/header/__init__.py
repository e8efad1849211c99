"""header stage."""
