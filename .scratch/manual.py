from tests.unit import test_approvals_machine as m
mach = m.ApprovalInterleavings()
mach.open.__wrapped__(mach, 1, True) if hasattr(mach.open, "__wrapped__") else m.ApprovalInterleavings.open(mach, 1, True)
m.ApprovalInterleavings.approve_and_die(mach, "after", m.BOB)
print("crashed", mach.crashed, mach.run(mach.e.state(mach.requests[-1])), mach.e.argo.started_for(mach.requests[-1]))
m.ApprovalInterleavings.controller_acts(mach, "Succeeded")
m.ApprovalInterleavings.restart(mach)
print(mach.run(mach.e.state(mach.requests[-1])), mach.e.argo.started_for(mach.requests[-1]))
try:
    mach.never_more_than_one_sync()
except AssertionError as e: print("INVARIANT", e)
mach.teardown()
