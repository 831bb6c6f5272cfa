"""Names of users, for the audit trail, `written_by` and the state owner.

On the ground floor: sources (trust), commands (privilege) and outputs
(audit) all name users, and none of them should import another for it.
"""

from __future__ import annotations


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"
