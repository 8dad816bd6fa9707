"""Tools that move and look after stored data through the public store API: ``copy``
(and verify), ``export`` / ``import`` (JSON lines), ``prune``. The commands that run
them are in ``statestore.cli.data``."""
