"""The store's settings: named values kept with the records (the token secret, for one)."""

from __future__ import annotations

import sqlalchemy as sa

from oaiserver.store.schema import settings
from oaiserver.store.transactions import Transactions


class Settings(Transactions):
    """`Store`'s settings."""

    # ---- settings -------------------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
        return default if value is None else value

    def put_setting(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing what is there."""
        with self.engine.begin() as conn:
            if conn.execute(settings.update().where(settings.c.key == key).values(value=value)).rowcount == 0:
                conn.execute(settings.insert().values(key=key, value=value))

    def ensure_setting(self, key: str, value: str) -> str:
        """Store `value` under `key` unless one is there already; return the stored one."""
        try:
            with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                current = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
                if current is not None:
                    return str(current)
                conn.execute(settings.insert().values(key=key, value=value))
                return value
        except sa.exc.IntegrityError:  # another process stored one first: use theirs
            stored = self.setting(key)
            assert stored is not None
            return stored
