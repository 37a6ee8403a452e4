"""Small helpers shared by the package: module names, config look-ups."""
