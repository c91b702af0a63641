"""How a ``Feed`` runs its user's code: the completed second's announcements
(:mod:`.callbacks`), callback timing and the lag warning (:mod:`.lag`), the latest-state
strategy thread (:mod:`.thread`). The rule itself is pure compute:
:mod:`fastfeed.engine.seconds`."""
