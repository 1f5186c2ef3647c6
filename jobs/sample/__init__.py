"""The synthetic sample: raw ads and clicks with personas."""
