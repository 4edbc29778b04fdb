"""What runs on the login node to keep hogs alive: the monitor and its backends."""
