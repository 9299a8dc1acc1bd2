"""Persistent state: accounts, registrations, call records and the numbers PSAP callbacks may
call.

:mod:`gateway.core.store.interface` defines the :class:`Store` protocol and its values;
:mod:`gateway.core.store.sqlite` is the default backend (one file in the state directory);
:mod:`gateway.core.store.postgresql` is the one several nodes share;
:mod:`gateway.core.store.backends` opens the one ``[store]`` names.
"""

from __future__ import annotations
