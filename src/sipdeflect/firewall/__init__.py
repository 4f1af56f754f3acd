"""sipdeflect.firewall."""
