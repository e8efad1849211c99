"""node stage."""
