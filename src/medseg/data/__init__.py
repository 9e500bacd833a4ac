"""Dataset readers (one per format), built-in data, transforms."""
