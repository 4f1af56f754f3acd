"""sipdeflect.sip."""
