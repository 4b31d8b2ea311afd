"""The south app's package."""
