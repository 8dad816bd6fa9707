"""The built-in backends; each registers itself through the ``statestore`` entry points."""
