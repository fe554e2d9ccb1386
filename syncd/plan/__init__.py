"""The planner: desired state per (destination, target, profile), diffed against the ledger.

`desired` turns profile traits into desired states through the destination mappings,
`ledger` reads and records what each destination acknowledged, `planner` walks the profiles
in bounded chunks and keeps only the states that differ from the ledger.
"""

from syncd.plan.desired import DesiredState, state_hash
from syncd.plan.planner import PlanChunk, PlannedPush, plan_chunks

__all__ = ["DesiredState", "PlanChunk", "PlannedPush", "plan_chunks", "state_hash"]
