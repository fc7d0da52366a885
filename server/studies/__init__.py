"""Studies: de-identified images stored once per clinic by pixel hash."""
