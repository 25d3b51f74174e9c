"""The lab: a simulated Exchange organisation served over real WSMan/PSRP (plus the Graph and HTTPS services others plug in)."""
