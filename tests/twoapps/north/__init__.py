"""The north app's package."""
