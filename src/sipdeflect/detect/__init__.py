"""sipdeflect.detect."""
