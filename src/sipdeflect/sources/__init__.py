"""sipdeflect.sources."""
