"""Sources: opening what the user points at, lazily, validating cheaply first."""
