# The border: announce blocks upstream over BGP (RTBH, FlowSpec) through ExaBGP.
