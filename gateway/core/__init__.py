"""The ground floor every app stands on (clock, errors, logs, store, lifecycle,
metrics): it imports no app."""
