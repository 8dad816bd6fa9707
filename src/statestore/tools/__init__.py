"""Tools that move and look after stored data: ``copy`` (and verify), ``export`` /
``import`` (JSON lines), ``prune``, ``stats``. The CLI commands live in ``tools.cli``."""
