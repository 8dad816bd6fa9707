pytest_plugins = ["statestore.testing.plugin"]
