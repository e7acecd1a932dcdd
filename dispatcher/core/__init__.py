"""The vocabulary and the durable state: imports nothing of the house above it."""
