"""Reports for people: abuse reports (XARF v4), traffic graphs and HTML pages."""
