"""The embedded demo plant: an ordinary config file plus a simulator for each device."""
