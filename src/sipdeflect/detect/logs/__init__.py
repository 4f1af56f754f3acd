"""sipdeflect.detect.logs."""
