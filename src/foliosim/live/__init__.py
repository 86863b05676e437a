"""Scenarios run as real processes on the running kernel and diffed against the simulator."""
