"""sipdeflect.store."""
