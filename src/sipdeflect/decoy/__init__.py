"""sipdeflect.decoy."""
