"""What every layer shares: the error types, atomic file writing, the version, JSON forms of results."""
