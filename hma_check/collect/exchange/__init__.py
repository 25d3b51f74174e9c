"""The Exchange collector: read-only cmdlets over remote PowerShell (pypsrp), shaped into sources."""
