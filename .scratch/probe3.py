import asyncio
from tests.unit import test_approvals_machine as m
mach = m.ApprovalInterleavings()
m.ApprovalInterleavings.open(mach, 1, True)
m.ApprovalInterleavings.react(mach, m.BOB, "✅", m.ROOM, "after")
print("crashed", mach.crashed, mach.run(mach.e.state(mach.requests[-1])))
mach.teardown()
